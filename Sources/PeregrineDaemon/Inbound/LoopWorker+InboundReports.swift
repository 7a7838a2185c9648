import Dispatch
import PeregrineIO
import PeregrineAccounting
import PeregrineEngine

/// What the processors did with a message: the recipients still to relay,
/// and the record types logged that must be durable before the 250.
struct InboundReportDisposition {
    var relay: [Int]
    var loggedTypes: [AccountingRecordType]
}

extension LoopWorker {
    /// Runs the message through `<bounce-processor>`/`<feedback-loop-processor>`
    /// when one is configured and handles a recipient: logs the `rb`/`f`
    /// records and returns the indices of the recipients still to relay.
    /// Nil when no processor is involved (the common case costs two nil checks).
    func inboundReports(for message: UnsafeRawBufferPointer, recipients: [String], peer: SocketAddress,
                        helo: String?) -> InboundReportDisposition? {
        let config = policies.config
        guard config.bounceProcessor != nil || config.feedbackLoopProcessor != nil else { return nil }
        let processor = InboundReportProcessor(bounce: config.bounceProcessor, feedbackLoop: config.feedbackLoopProcessor,
                                               classifier: config.bounceClassifier)
        let outcome = processor.process(Array(message), recipients: recipients,
                                        peer: "\(helo ?? peer.ip) (\(peer.ip))", now: wallClockSeconds())
        guard outcome.processed else { return nil }
        for line in outcome.log { daemon.log(line) }
        var logged: [AccountingRecordType] = []
        for record in outcome.records {
            daemon.suppress(from: record)  // rb hard bounces and f complaints (Daemon+Suppression.swift)
            if daemon.accounting.accepts(record.type) {
                daemon.accounting.log(record)
                if !logged.contains(record.type) { logged.append(record.type) }
            }
        }
        emitReportEvents(outcome.records)
        return InboundReportDisposition(relay: outcome.relay, loggedTypes: logged)
    }

    /// Makes the accounting records of `types` durable (write + fsync, off
    /// the loop: an fsync can take milliseconds), then calls `done` on this
    /// loop with whether that worked. A read report exists nowhere but in
    /// its records, so its 250 waits for them (the spool's rule for messages).
    func syncAccounting(_ types: [AccountingRecordType], _ done: @escaping (Bool) -> Void) {
        guard !types.isEmpty else { done(true); return }
        let accounting = daemon.accounting
        let loop = self.loop
        let reply = LoopConfined(done)
        DispatchQueue.global().async {
            let errors = accounting.sync(types)
            loop.execute { reply.value(errors.isEmpty) }
        }
    }
}
