import Foundation
import Synchronization
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
    /// The running senders; `reconfigure` (ctl reload) replaces them.
    private let current: Locked<[WebhookSender]>
    var senders: [WebhookSender] { current.withLock { $0 } }
    /// Event types at least one webhook takes (bit `rawValue`): the others are
    /// never written. An atomic: every delivery loop asks, a reload changes it.
    private let subscribedMask = Atomic<UInt16>(0)
    private let compaction = Locked<UInt64>(0)
    private let accounting: AccountingLog
    private let daemonLog: @Sendable (String) -> Void
    /// Serialises reconfigurations: each runs on its own thread (stopping a
    /// sender waits for its request in flight) and must not overlap the next.
    private let reconfiguring = NSLock()
    /// The webhook-max-age the senders run with.
    private var maxAge: Duration  // guarded by `reconfiguring`

    init(config: PeregrineConfig, accounting: AccountingLog, segmentBytesLimit: UInt64 = 16 << 20,
         daemonLog: @escaping @Sendable (String) -> Void) throws {
        let directory = config.spoolPath + "/webhook-events"
        log = try WebhookEventLog(directory: directory, segmentBytesLimit: segmentBytesLimit, log: daemonLog)
        self.accounting = accounting
        self.daemonLog = daemonLog
        maxAge = config.webhookMaxAge
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
        current = Locked(senders)
        subscribedMask.store(Self.mask(config.webhooks), ordering: .releasing)
        owner.value = self
        compact()
        for s in senders { s.start() }
    }

    static func mask(_ hooks: [WebhookSettings]) -> UInt16 {
        hooks.reduce(0) { m, h in h.events.reduce(m) { $0 | (1 << UInt16($1.rawValue)) } }
    }

    func wants(_ t: WebhookEventType) -> Bool { subscribedMask.load(ordering: .acquiring) & (1 << UInt16(t.rawValue)) != 0 }

    /// `ctl reload`: a webhook whose settings (and webhook-max-age) are
    /// unchanged keeps running, its cursor untouched; a changed one (url,
    /// secret, events, batching, timeouts) is stopped and started again with
    /// the new settings from its saved cursor; a removed one is stopped and
    /// its cursor deleted (so it pins no segment); a new one starts at the
    /// log's end: it gets the events written from the reload on, not the
    /// retained history of the others. Newly subscribed types are written
    /// from now on. The senders are swapped on a thread of their own, since
    /// stopping one waits for its request in flight.
    func reconfigure(_ config: PeregrineConfig) {
        let hooks = config.webhooks, newMaxAge = config.webhookMaxAge
        // New types are written from now on (before any new sender reads the log).
        subscribedMask.store(Self.mask(hooks) | subscribedMask.load(ordering: .acquiring), ordering: .releasing)
        let t = Thread { [self] in
            reconfiguring.lock()
            defer { reconfiguring.unlock() }
            let old = current.withLock { $0 }
            let ageChanged = newMaxAge != maxAge
            maxAge = newMaxAge
            var next: [WebhookSender] = []
            var started: [WebhookSender] = []
            for hook in hooks {
                let previous = old.first { $0.settings.name == hook.name }
                if let previous, previous.settings == hook, !ageChanged {
                    next.append(previous)
                    continue
                }
                previous?.stop()
                do {
                    let s = try WebhookSender(settings: hook, log: log, maxAge: newMaxAge, accounting: accounting, daemonLog: daemonLog,
                                              startAtEnd: previous == nil, cursorMoved: { [weak self] in self?.compact() })
                    next.append(s)
                    started.append(s)
                    daemonLog("webhooks: \(hook.name) \(previous == nil ? "added" : "changed") on reload (\(hook.url))")
                } catch {
                    daemonLog("webhooks: \(hook.name) cannot start after the reload: \(error); its events wait in the log")
                }
            }
            for s in old where !hooks.contains(where: { $0.name == s.settings.name }) {
                s.stop()
                unlink(s.cursorPath)
                daemonLog("webhooks: \(s.settings.name) removed on reload; its cursor is deleted")
            }
            current.withLock { $0 = next }
            // Types no webhook takes any more stop being written once the senders that took them are gone.
            subscribedMask.store(Self.mask(hooks), ordering: .releasing)
            for s in started { s.start() }
            compact()
        }
        t.name = "peregrine-webhook-reload"
        t.start()
    }

    /// Writes `event` (when some webhook takes its type); `then` runs on the log
    /// thread once it is durable, or at once when no webhook takes it but the
    /// log is in use (after the events before it are durable, which keeps an
    /// outcome from outliving the message's `injected` event).
    func emit(_ event: WebhookEvent, then: (@Sendable () -> Void)? = nil) {
        if wants(event.type) {
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
                  // The accounting record's dsnDiag, enhanced code included (it was dropped before).
                  diagnostic: reply.map { AccountingRecord.dsnDiag(smtpReply: $0.description) }, category: category)
    }
}

