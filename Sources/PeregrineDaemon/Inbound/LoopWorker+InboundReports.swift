import PeregrineIO
import PeregrineAccounting
import PeregrineEngine

extension LoopWorker {
    /// Runs the message through `<bounce-processor>`/`<feedback-loop-processor>`
    /// when one is configured and handles a recipient: logs the `rb`/`f`
    /// records and returns the indices of the recipients still to relay.
    /// Nil when no processor is involved (the common case costs two nil checks).
    func inboundReports(for message: UnsafeRawBufferPointer, recipients: [String], peer: SocketAddress,
                        helo: String?) -> [Int]? {
        let config = policies.config
        guard config.bounceProcessor != nil || config.feedbackLoopProcessor != nil else { return nil }
        let processor = InboundReportProcessor(bounce: config.bounceProcessor, feedbackLoop: config.feedbackLoopProcessor,
                                               classifier: config.bounceClassifier)
        let outcome = processor.process(Array(message), recipients: recipients,
                                        peer: "\(helo ?? peer.ip) (\(peer.ip))", now: wallClockSeconds())
        guard outcome.processed else { return nil }
        for line in outcome.log { daemon.log(line) }
        for record in outcome.records {
            daemon.suppress(from: record)  // rb hard bounces and f complaints (Daemon+Suppression.swift)
            if daemon.accounting.accepts(record.type) { daemon.accounting.log(record) }
        }
        emitReportEvents(outcome.records)
        return outcome.relay
    }
}
