import PeregrineIO
import PeregrineAccounting
import PeregrineEngine

/// `<bounce-processor>` and `<feedback-loop-processor>` at injection: for the
/// recipients their address lists match, the message is read as a bounce
/// report (`rb` records) or an ARF complaint (`f` records) instead of being
/// relayed. Pure apart from the accounting log and the daemon log.
struct InboundReportProcessor {
    let bounce: InboundProcessorSettings?
    let feedbackLoop: InboundProcessorSettings?
    let classifier: BounceClassifier

    /// What to do with a message: the indices of the recipients still to
    /// relay, and the accounting records (and log lines) its reports gave.
    struct Outcome {
        var relay: [Int]
        var records: [AccountingRecord] = []
        var log: [String] = []
        /// Whether any recipient was a processor's (the reply says so).
        var processed = false
    }

    /// Splits `recipients` between the processors and relaying, reading the
    /// report at most once per processor.
    func process(_ message: [UInt8], recipients: [String], peer: String, now: Int64) -> Outcome {
        var out = Outcome(relay: [])
        var bounceRcpts: [Int] = [], fblRcpts: [Int] = []
        for (i, r) in recipients.enumerated() {
            if let b = bounce, b.handles(r) { bounceRcpts.append(i) }
            else if let f = feedbackLoop, f.handles(r) { fblRcpts.append(i) }
            else { out.relay.append(i) }
        }
        if let settings = bounce, !bounceRcpts.isEmpty {
            out.processed = true
            let verp = bounceRcpts.lazy.compactMap { InboundReportParser.verpRecipient(recipients[$0]) }.first
            let bounces = InboundReportParser.bounces(in: message, classifier: classifier, verpRecipient: verp)
            // A report goes to the original's envelope sender: the address it came to is that sender.
            let originalSender = recipients[bounceRcpts[0]]
            for b in bounces {
                out.records.append(AccountingRecord(
                    type: .remoteBounce, timeLogged: now, orig: originalSender, rcpt: b.recipient,
                    orcpt: b.originalRecipient, dsnAction: b.action,
                    dsnStatus: AccountingRecord.dsnStatus(enhancedCode: b.status, replyCode: 550),
                    dsnDiag: b.diagnostic, dsnMta: b.remoteMTA, bounceCat: b.category.rawValue,
                    srcType: "smtp", srcMta: peer, jobId: b.jobID, envId: b.envelopeID))
            }
            if bounces.isEmpty {
                out.log.append("bounce-processor: message from \(peer) for \(bounceRcpts.map { recipients[$0] }) is no bounce "
                               + "report Peregrine can read; " + (settings.deliverUnmatchedEmail ? "relayed" : "dropped"))
                if settings.deliverUnmatchedEmail { out.relay += bounceRcpts }
            } else if settings.deliverMatchedEmail {
                out.relay += bounceRcpts
            }
        }
        if let settings = feedbackLoop, !fblRcpts.isEmpty {
            out.processed = true
            if let c = InboundReportParser.complaint(in: message) {
                out.records.append(AccountingRecord(
                    type: .feedbackLoop, timeLogged: now, orig: c.originalSender, rcpt: c.recipient,
                    dsnDiag: "arf;\(c.feedbackType)" + (c.userAgent.isEmpty ? "" : " (\(c.userAgent))"),
                    dsnMta: c.reportingMTA, bounceCat: c.feedbackType, srcType: "smtp", srcMta: peer,
                    dlvSourceIp: c.sourceIP, jobId: c.jobID))
                if settings.deliverMatchedEmail { out.relay += fblRcpts }
            } else {
                out.log.append("feedback-loop-processor: message from \(peer) for \(fblRcpts.map { recipients[$0] }) is no "
                               + "ARF report; " + (settings.deliverUnmatchedEmail ? "relayed" : "dropped"))
                if settings.deliverUnmatchedEmail { out.relay += fblRcpts }
            }
        }
        out.relay.sort()
        return out
    }
}
