import PeregrineIO
import PeregrineSMTP
import PeregrineConfig
import PeregrineSpool
import PeregrineEngine

/// Bounce (and success) reports for one loop: decides whether a report is
/// due (NOTIFY, null or invalid sender, `deliver-local-dsn`, the per-sender
/// rate), gathers the recipients one loop turn finished into one report per
/// message, reads the original back from the spool and spools the report
/// (null sender) like any injected message.
///
/// The recipient's final state is written to the spool only once its report
/// is durable: a crash in between leaves the recipient pending, so recovery
/// attempts it again and the report is made again (a duplicate report at
/// worst, never a lost one).
final class DSNGenerator<Loop: EventLoop> {
    unowned let worker: LoopWorker<Loop>
    private struct Pending {
        var message: QueuedMessage
        /// `state` nil: a delay notice (the recipient stays pending; nothing to record).
        var entries: [(index: Int, state: RecipientState?, report: DeliveryStatusReport.Recipient)]
    }
    private var pending: [ObjectIdentifier: Pending] = [:]
    private var order: [ObjectIdentifier] = []
    private var flushScheduled = false
    private var limiters: [String: RateLimiter] = [:]
    private var sequence: UInt64 = 0
    /// Reports made, and reports not made because a sender was over the rate.
    private(set) var generated: UInt64 = 0
    private(set) var rateLimited: UInt64 = 0
    private(set) var delayNotices: UInt64 = 0

    init(worker: LoopWorker<Loop>) { self.worker = worker }

    /// Whether a report is due for this outcome; if so it is queued and the
    /// generator records the recipient's final `state` once the report is
    /// spooled (true), otherwise the caller records it now (false).
    func report(_ message: QueuedMessage, recipient: Int, action: DeliveryStatusReport.Action, state: RecipientState,
                queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo?) -> Bool {
        // Most outcomes want no report (a delivery without NOTIFY=SUCCESS): that is
        // decided from the NOTIFY byte, before the sender or the address becomes a String.
        guard Self.notifyAsks(action, notify: message.recipients.notify(recipient)) else { return false }
        let rcpt = message.recipients[recipient]
        guard Self.isDue(action, notify: rcpt.notify, sender: message.sender, deliverLocalDSN: queue.policy.deliverLocalDSN)
        else { return false }
        // Never a report to a suppressed sender (a complaint or a hard bounce would follow it).
        if worker.daemon.suppression?.reason(forRecipient: message.sender) != nil { return false }
        let entry = DeliveryStatusReport.Recipient(
            finalRecipient: rcpt.address, originalRecipient: rcpt.orcpt, action: action, reply: reply,
            remoteMTA: connection?.destinationName, lastAttempt: wallClockSeconds())
        enqueue(message, recipient, state, entry)
        return true
    }

    /// A deferral: once the recipient has waited `notify-of-delay-every`
    /// since queueing, its one delay notice (RFC 3464 `Action: delayed`) if
    /// NOTIFY allows DELAY (RFC 3461: no NOTIFY means FAILURE,DELAY), never to
    /// the null sender. Remembered across restarts (`Daemon.delayNoticeMarks`,
    /// the spool's `delay-notices` file): a restart sends no second one.
    func delayed(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                 connection: DeliveryAttemptInfo?) {
        guard let after = queue.policy.notifyOfDelayEvery else { return }
        let now = wallClockSeconds()
        guard now - message.receivedAtWall >= after.components.seconds else { return }
        let marks = worker.daemon.delayNoticeMarks
        guard !marks.contains(message.id, recipient: recipient) else { return }
        let rcpt = message.recipients[recipient]
        guard Self.isDue(.delayed, notify: rcpt.notify, sender: message.sender, deliverLocalDSN: queue.policy.deliverLocalDSN)
        else { return }
        if worker.daemon.suppression?.reason(forRecipient: message.sender) != nil { return }
        marks.mark(message.id, recipient: recipient)
        delayNotices += 1
        let entry = DeliveryStatusReport.Recipient(
            finalRecipient: rcpt.address, originalRecipient: rcpt.orcpt, action: .delayed, reply: reply,
            remoteMTA: connection?.destinationName, lastAttempt: now)
        enqueue(message, recipient, nil, entry)
    }

    /// The message is done (every recipient final): forget its delay notices.
    func completed(_ message: QueuedMessage) {
        worker.daemon.delayNoticeMarks.forget(message.id, recipients: message.recipients.count)
    }

    private func enqueue(_ message: QueuedMessage, _ recipient: Int, _ state: RecipientState?,
                         _ entry: DeliveryStatusReport.Recipient) {
        let key = ObjectIdentifier(message)
        if pending[key] == nil {
            pending[key] = Pending(message: message, entries: [])
            order.append(key)
        }
        pending[key]?.entries.append((recipient, state, entry))
        if !flushScheduled {
            // The engine finishes a transaction's recipients in one turn: one report for them all.
            flushScheduled = true
            worker.loop.execute { [unowned self] in self.flush() }
        }
    }

    /// Whether a report with `action` is due for a recipient with `notify`
    /// from `sender`. NOTIFY is tested first: the common delivery (no
    /// SUCCESS asked) returns at the cost of one bit test.
    static func isDue(_ action: DeliveryStatusReport.Action, notify: NotifyFlags, sender: String,
                      deliverLocalDSN: Bool) -> Bool {
        notifyAsks(action, notify: notify) && deliverLocalDSN && canReceiveReports(sender)
    }

    /// Whether the recipient's NOTIFY asks for a report of `action`.
    static func notifyAsks(_ action: DeliveryStatusReport.Action, notify: NotifyFlags) -> Bool {
        switch action {
        case .failed, .delayed:
            // RFC 3461 §4.1: no NOTIFY means FAILURE,DELAY; NEVER excludes the others.
            if notify.contains(.never) { return false }
            if !notify.isEmpty && !notify.contains(action == .failed ? .failure : .delay) { return false }
        case .relayed:
            // The next hop never gets NOTIFY, so SUCCESS is answered here (RFC 3461 §5.2.2: "relayed").
            guard notify.contains(.success) else { return false }
        }
        return true
    }

    /// Null sender: never bounce a bounce. No domain: nowhere to send it.
    static func canReceiveReports(_ sender: String) -> Bool {
        guard let at = sender.lastIndex(of: "@"), at != sender.startIndex else { return false }
        return sender.index(after: at) < sender.endIndex
    }

    private func flush() {
        flushScheduled = false
        let batches = order.compactMap { pending[$0] }
        pending.removeAll()
        order.removeAll()
        for batch in batches { make(batch) }
    }

    private func allowed(_ sender: String) -> Bool {
        let rate = worker.policies.config.dsnMaxRatePerSender
        if rate == .unlimited { return true }
        let key = sender.lowercased()
        var limiter = limiters[key] ?? RateLimiter(rate: rate, burst: Self.burst(of: rate))
        let ok = limiter.tryAcquire(now: worker.loop.now)
        limiters[key] = limiter
        if limiters.count > 100_000 { limiters.removeAll() }  // bounded: forgetting a sender only resets its budget
        return ok
    }

    /// A sender may get up to 20 reports at once (never more than the rate's
    /// own count), then reports at the rate.
    static func burst(of rate: Rate) -> Int {
        if case .limited(let count, _) = rate { return max(1, min(count, 20)) }
        return 1
    }

    private func recordOutcomes(_ batch: Pending) {
        for e in batch.entries {
            if let state = e.state {
                worker.outcome(batch.message, e.index, state)
            } else {
                // A delay notice, spooled (or given up): the mark goes to disk only now, so a
                // crash before the report was durable makes it again rather than never.
                worker.daemon.delayNoticeMarks.persist(batch.message.id, recipient: e.index)
            }
        }
    }

    private func make(_ batch: Pending) {
        let message = batch.message
        guard allowed(message.sender) else {
            rateLimited += 1
            if rateLimited == 1 || rateLimited % 1000 == 0 {
                worker.daemon.log("bounce report for \(message.id) to <\(message.sender)> not sent: over the sender's "
                                  + "report rate (\(rateLimited) so far)")
            }
            recordOutcomes(batch)
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, message.recordLength), alignment: 16)
        worker.readBody(of: message, into: buffer) { [unowned self] result in
            defer { buffer.deallocate() }
            switch result {
            case .failure(let e):
                self.worker.daemon.log("bounce report for \(message.id): original unreadable (\(e)); no report sent")
                self.recordOutcomes(batch)
            case .success(let original):
                self.spool(batch, original: original)
            }
        }
    }

    private func spool(_ batch: Pending, original: UnsafeRawBufferPointer) {
        let message = batch.message
        let daemon = worker.daemon
        let config = worker.policies.config
        sequence &+= 1
        let report = DeliveryStatusReport(
            reportingMTA: daemon.hostName, from: config.postmaster ?? "MAILER-DAEMON@\(daemon.hostName)",
            to: message.sender, envelopeID: message.envId, arrivalDate: message.receivedAtWall,
            recipients: batch.entries.map(\.report), ret: message.ret)
        let bytes = report.render(original: original, messageID: "\(message.id).\(worker.index).\(sequence).dsn@\(daemon.hostName)",
                                  date: wallClockSeconds())
        let envelope = SpoolEnvelope(sender: [], recipients: [SpoolRecipient(address: Array(message.sender.utf8))],
                                     vmta: Array(message.vmta.utf8), receivedAt: wallClockMilliseconds())
        guard let spool = worker.primarySpool else { recordOutcomes(batch); return }
        let receivedAt = worker.loop.now
        var assigned: MessageID?
        assigned = bytes.withUnsafeBytes { body in
            spool.append(envelope: envelope, body: body) { [unowned self] result in
                switch result {
                case .success(let location):
                    guard let id = assigned else { return }
                    self.generated += 1
                    let dsn = self.worker.makeMessage(id: id, envelope: envelope, stream: self.worker.index, size: bytes.count,
                                                      recordLength: Int(location.recordLength), receivedAt: receivedAt,
                                                      states: nil)
                    self.recordOutcomes(batch)
                    daemon.dispatch(dsn, from: self.worker)
                case .failure(let e):
                    // Not recorded as final: the recipient stays pending in the spool, so
                    // recovery retries it and the report is made again.
                    daemon.log("bounce report for \(message.id) not spooled (\(e)); the recipients stay pending on disk")
                }
            }
        }
    }
}
