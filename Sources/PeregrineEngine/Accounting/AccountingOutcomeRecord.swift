import PeregrineSMTP
import PeregrineAccounting

/// A `d`, `b` or `t` record for one recipient's delivery outcome, encoded
/// straight from the message, queue key, reply and connection: the same line
/// an `AccountingRecord` filled from them gives (the tests compare both), without the
/// Strings such a record needs (status text, diagnostic, `name (ip)`, IPs,
/// queue name).
public struct AccountingOutcomeRecord: AccountingRecordEncodable {
    public var type: AccountingRecordType
    public var timeLogged: Int64
    public var message: QueuedMessage
    public var recipient: Int
    /// The queue that made the attempt (its VMTA: a pool's other member once a source IP was disabled).
    public var queue: QueueKey
    public var reply: SMTPReply
    public var connection: DeliveryAttemptInfo?
    /// Bounce category (`b` records), empty otherwise.
    public var category: String

    public init(type: AccountingRecordType, timeLogged: Int64, message: QueuedMessage, recipient: Int,
                queue: QueueKey, reply: SMTPReply, connection: DeliveryAttemptInfo?, category: String) {
        self.type = type; self.timeLogged = timeLogged; self.message = message; self.recipient = recipient
        self.queue = queue; self.reply = reply; self.connection = connection; self.category = category
    }

    public var accountingType: AccountingRecordType { type }

    /// RFC 3464 action of the record type.
    var dsnAction: StaticString {
        switch type {
        case .delivered: return "relayed"
        case .bounced: return "failed"
        default: return "delayed"
        }
    }

    public func encodeCSV(into line: inout AccountingLineEncoder) {
        let m = message
        let e = m.envelope
        line.field(type.rawValue); line.comma()
        line.timestamp(timeLogged); line.comma()
        line.timestamp(m.receivedAtWall); line.comma()
        e.appendField(EnvelopeText.senderField, to: &line); line.comma()
        e.appendField(EnvelopeText.addressField(recipient), to: &line); line.comma()
        e.appendField(EnvelopeText.orcptField(recipient), to: &line); line.comma()
        line.raw(dsnAction); line.comma()
        line.dsnStatus(reply); line.comma()
        line.dsnDiag(reply); line.comma()
        if let c = connection {
            let start = line.beginField()
            line.raw(c.destinationName); line.raw(" ("); line.rawIP(c.destination); line.raw(UInt8(ascii: ")"))
            line.endField(start)
        }
        line.comma()
        line.field(category); line.comma()
        line.raw("smtp"); line.comma()
        line.comma()                                              // srcMta
        if connection != nil { line.raw("smtp") }; line.comma()   // dlvType
        line.ip(connection?.sourceAddress); line.comma()
        line.ip(connection?.destination); line.comma()
        if let c = connection { line.raw(c.esmtp ? "yes" : "no") }; line.comma()
        line.integer(Int64(m.bodySize)); line.comma()
        line.field(queue.vmta); line.comma()
        e.appendField(EnvelopeText.jobField, to: &line); line.comma()
        e.appendField(EnvelopeText.envIDField, to: &line); line.comma()
        line.timestamp(m.firstAttemptWall == 0 ? nil : m.firstAttemptWall); line.comma()
        line.integer(max(0, timeLogged - m.receivedAtWall)); line.comma()
        let start = line.beginField()
        line.raw(queue.domain); line.raw(UInt8(ascii: "/")); line.raw(queue.vmta)
        line.endField(start); line.comma()
        line.field(connection?.tlsProtocol); line.comma()
        line.field(connection?.tlsCipher); line.comma()
        line.comma()                                             // rcvSmtpUser (r records only)
        line.field(m.pool)
        line.endLine()
    }
}
