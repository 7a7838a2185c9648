import PeregrineIO
import PeregrineAccounting

/// An `r` record for one recipient of a message accepted over SMTP, encoded
/// straight from the message and the client's address (the same line as the
/// `AccountingRecord` the tests build, without its Strings; nothing at all is
/// built when no `<acct-file>` takes `r` records).
public struct AccountingReceivedRecord: AccountingRecordEncodable {
    public var timeLogged: Int64
    public var message: QueuedMessage
    public var recipient: Int
    /// The injecting client (srcMta).
    public var peer: SocketAddress
    /// The SMTP AUTH login (rcvSmtpUser); empty without one.
    public var smtpUser: String

    public init(timeLogged: Int64, message: QueuedMessage, recipient: Int, peer: SocketAddress, smtpUser: String = "") {
        self.timeLogged = timeLogged; self.message = message; self.recipient = recipient; self.peer = peer
        self.smtpUser = smtpUser
    }

    public var accountingType: AccountingRecordType { .received }

    public func encodeCSV(into line: inout AccountingLineEncoder) {
        let m = message
        let e = m.envelope
        line.raw("r,")
        line.timestamp(timeLogged); line.comma()
        line.timestamp(timeLogged); line.comma()                 // timeQueued: now
        e.appendField(EnvelopeText.senderField, to: &line); line.comma()
        e.appendField(EnvelopeText.addressField(recipient), to: &line); line.comma()
        e.appendField(EnvelopeText.orcptField(recipient), to: &line); line.comma()
        line.raw(",,,,")                                         // dsnAction, dsnStatus, dsnDiag, dsnMta
        line.raw(",smtp,")                                       // bounceCat, srcType
        line.rawIP(peer); line.comma()                           // srcMta
        line.raw(",,,,")                                         // dlvType, dlvSourceIp, dlvDestinationIp, dlvEsmtpAvailable
        line.integer(Int64(m.bodySize)); line.comma()
        line.field(m.vmta); line.comma()
        e.appendField(EnvelopeText.jobField, to: &line); line.comma()
        e.appendField(EnvelopeText.envIDField, to: &line); line.comma()
        line.raw(",,,,,")                                        // timeFirstAttempt, totalSecondsQueued, queue, dlvTlsProtocol, dlvTlsCipher
        line.field(smtpUser); line.comma()                       // rcvSmtpUser
        line.field(m.pool)
        line.endLine()
    }
}
