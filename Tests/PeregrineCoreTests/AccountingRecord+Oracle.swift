@testable import PeregrineAccounting
@testable import PeregrineEngine

// The String-built records the daemon logged before the byte encoders
// existed: the oracle the encoder tests compare every encoded line with.

extension AccountingReceivedRecord {
    /// The same record as Strings (what the daemon logged before this type existed).
    var record: AccountingRecord {
        let m = message
        let r = m.recipients[recipient]
        var record = AccountingRecord(type: .received, timeLogged: timeLogged, timeQueued: timeLogged, orig: m.sender,
                                      rcpt: r.address, orcpt: r.orcpt ?? "", srcType: "smtp",
                                      srcMta: peer.ip, dlvSize: m.bodySize, vmta: m.vmta,
                                      jobId: m.jobId ?? "", envId: m.envId ?? "", vmtaPool: m.pool ?? "")
        record.rcvSmtpUser = smtpUser
        return record
    }
}

extension AccountingOutcomeRecord {
    /// The same outcome as a record of Strings (what the daemon logged before
    /// this type existed); tests compare the two encodings.
    var record: AccountingRecord {
        let m = message
        let rcpt = m.recipients[recipient]
        let action: String
        switch type {
        case .delivered: action = "relayed"
        case .bounced: action = "failed"
        default: action = "delayed"
        }
        return AccountingRecord(
            type: type, timeLogged: timeLogged, timeQueued: m.receivedAtWall, orig: m.sender, rcpt: rcpt.address,
            orcpt: rcpt.orcpt ?? "", dsnAction: action,
            dsnStatus: AccountingRecord.dsnStatus(enhancedCode: reply.enhancedCode?.description, replyCode: reply.code),
            dsnDiag: AccountingRecord.dsnDiag(smtpReply: reply.description),
            dsnMta: connection.map { "\($0.destinationName) (\($0.destination.ip))" } ?? "",
            bounceCat: category, srcType: "smtp", srcMta: "",
            dlvType: connection == nil ? "" : "smtp",
            dlvSourceIp: connection?.sourceAddress?.ip ?? "", dlvDestinationIp: connection?.destination.ip ?? "",
            dlvEsmtpAvailable: connection.map { $0.esmtp ? "yes" : "no" } ?? "", dlvSize: m.bodySize,
            vmta: queue.vmta, jobId: m.jobId ?? "", envId: m.envId ?? "",
            timeFirstAttempt: m.firstAttemptWall == 0 ? nil : m.firstAttemptWall,
            totalSecondsQueued: max(0, timeLogged - m.receivedAtWall), queue: queue.description,
            dlvTlsProtocol: connection?.tlsProtocol ?? "", dlvTlsCipher: connection?.tlsCipher ?? "",
            vmtaPool: m.pool ?? "")
    }
}
