import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineSpool
import PeregrineAccounting
import PeregrineEngine

/// The daemon's webhooks: one event log under the spool
/// (`<spool>/webhook-events`) and one sender thread per `<webhook>`.
/// Absent (nil in `Daemon`) when no `<webhook>` is configured: then no event
/// is built and outcomes are recorded as before.
///
/// Memory: the log's hand-over queue holds the events of outcomes not yet
/// written (one group commit's worth, or more while the disk fails); each
/// sender holds one batch. Nothing else grows with the backlog, which lives
/// on disk.
final class WebhookService: @unchecked Sendable {
    let log: WebhookEventLog
    let senders: [WebhookSender]
    /// Event types at least one webhook takes: the others are never written.
    let subscribed: Set<WebhookEventType>
    private let compaction = Locked<UInt64>(0)

    init(config: PeregrineConfig, accounting: AccountingLog, segmentBytesLimit: UInt64 = 16 << 20,
         daemonLog: @escaping @Sendable (String) -> Void) throws {
        let directory = config.spoolPath + "/webhook-events"
        log = try WebhookEventLog(directory: directory, segmentBytesLimit: segmentBytesLimit, log: daemonLog)
        subscribed = config.webhooks.reduce(into: Set()) { $0.formUnion($1.events) }
        // A webhook removed from the configuration must not pin old segments forever.
        let names = Set(config.webhooks.map(\.name))
        for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where file.hasPrefix("cursor-") && !file.hasSuffix(".tmp") && !names.contains(String(file.dropFirst(7))) {
            unlink(directory + "/" + file)
            daemonLog("webhooks: \(file.dropFirst(7)) is no longer configured; its cursor is removed")
        }
        var senders: [WebhookSender] = []
        // The senders start below, after `self` exists: until then nobody calls back.
        let owner = LoopConfined<WebhookService?>(nil)
        for hook in config.webhooks {
            senders.append(try WebhookSender(settings: hook, log: log, maxAge: config.webhookMaxAge, accounting: accounting,
                                             daemonLog: daemonLog, cursorMoved: { owner.value?.compact() }))
        }
        self.senders = senders
        owner.value = self
        compact()
        for s in senders { s.start() }
    }

    func wants(_ t: WebhookEventType) -> Bool { subscribed.contains(t) }

    /// Writes `event` (when some webhook takes its type); `then` runs on the log
    /// thread once it is durable, or at once when no webhook takes it but the
    /// log is in use (after the events before it are durable, which keeps an
    /// outcome from outliving the message's `injected` event).
    func emit(_ event: WebhookEvent, then: (@Sendable () -> Void)? = nil) {
        if subscribed.contains(event.type) {
            log.append(event, then: then)
        } else if let then {
            log.afterDurable(then)
        }
    }

    /// Deletes the segments every cursor has passed.
    func compact() {
        guard let lowest = senders.map({ $0.stats.withLock { $0.cursor.segment } }).min() else { return }
        let due = compaction.withLock { done -> Bool in
            if lowest <= done { return false }
            done = lowest
            return true
        }
        if due { log.deleteSegments(below: lowest) }
    }

    /// Shutdown: stops the senders, then the log (which writes what is pending).
    func stop() {
        for s in senders { s.stop() }
        log.stop()
    }

    // MARK: Status

    struct WebhookStatus {
        var name: String
        var url: String
        var backlog: UInt64
        var oldestPendingSeconds: Int64
        var sent: UInt64
        var batches: UInt64
        var failures: UInt64
        var expired: UInt64
        var lastError: String?
        var lastErrorTime: Int64?
        var cursor: String
    }

    func status() -> [WebhookStatus] {
        let (_, lastSequence) = log.durableEnd
        let now = wallMillis()
        return senders.map { s in
            let st = s.stats.withLock { $0 }
            return WebhookStatus(name: s.settings.name, url: s.settings.url.description,
                                 backlog: lastSequence > st.cursorSequence ? lastSequence - st.cursorSequence : 0,
                                 oldestPendingSeconds: st.oldestPendingMillis.map { max(0, now - $0) / 1000 } ?? 0,
                                 sent: st.sent, batches: st.batches, failures: st.failures, expired: st.expired,
                                 lastError: st.lastError, lastErrorTime: st.lastErrorTime, cursor: st.cursor.description)
        }
    }
}

extension WebhookEvent {
    /// The event for an outcome of `recipient` of `message`.
    init(type: WebhookEventType, message: QueuedMessage, recipient: Int, reply: SMTPReply? = nil,
         category: String? = nil, attempt: Int64? = nil) {
        let now = wallMillis()
        self.init(type: type, timeMillis: now,
                  id: Self.id(message: message.id, recipient: recipient, type: type, attempt: attempt),
                  messageID: message.id.description, recipient: message.recipients[recipient].address,
                  sender: message.sender, jobID: message.jobId, vmta: message.vmta,
                  status: reply.map { r in r.enhancedCode.map { "\($0)" } ?? "\(r.code / 100).0.0" },
                  diagnostic: reply.map { "smtp;\($0.code) \($0.text)" }, category: category)
    }
}

