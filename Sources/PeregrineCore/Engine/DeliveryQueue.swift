/// One `domain/vmta` queue: its recipients waiting (ready) or delayed, its
/// mode, and the throttles that bound how fast it may go. Pure state: the
/// delivery engine feeds it the clock and events and acts on its answers, so
/// every scheduling rule is unit-tested without sockets.
public final class DeliveryQueue {
    public enum Mode: String, Sendable { case normal, backoff }

    /// What a connection that has finished a transaction should do next.
    public enum Take {
        /// Send this item on the connection.
        case item(DeliveryItem)
        /// Work exists but a throttle holds it: ask again at this time.
        case wait(until: UInt64)
        /// Nothing ready: keep the connection idle (or close it after idle-timeout).
        case idle
        /// This connection must go (message cap reached, queue paused/suspended, over the connection cap).
        case close
    }

    public let key: QueueKey
    public private(set) var policy: DomainSettings
    public private(set) var mode: Mode = .normal
    public private(set) var backoffSince: UInt64 = 0
    public var isPaused = false
    /// Monotonic time until which the queue sends nothing (suspend=…, or after `tq`).
    public private(set) var suspendedUntil: UInt64 = 0
    public private(set) var suspendReason = ""

    private var ready = RingBuffer<DeliveryItem>()
    private var delayed = DeadlineHeap<DeliveryItem>()
    public private(set) var readyRecipients = 0
    public private(set) var delayedRecipients = 0
    public var readyItems: Int { ready.count }
    public var delayedItems: Int { delayed.count }

    private var messagePacer: RateLimiter
    private var connectPacer: RateLimiter

    /// A lower connection cap learned from a receiver that refused a
    /// connection while others of this queue were open ("too many
    /// connections"), in force until `learnedCapUntil`; 0 = none.
    public private(set) var learnedConnectionCap = 0
    public private(set) var learnedCapUntil: UInt64 = 0

    /// Connections open or being opened for this queue (maintained by the engine).
    public var connections = 0
    /// Of those, how many are idle waiting for work.
    public var idleConnections = 0

    // Counters for /queues and accounting summaries.
    public private(set) var delivered: UInt64 = 0
    public private(set) var bounced: UInt64 = 0
    public private(set) var deferred: UInt64 = 0
    public var lastReply = ""

    public init(key: QueueKey, policy: DomainSettings) {
        self.key = key
        self.policy = policy
        messagePacer = RateLimiter(rate: policy.maxMsgRate)
        connectPacer = RateLimiter(rate: policy.maxConnectRate)
    }

    public var isBackoff: Bool { mode == .backoff }
    public var totalRecipients: Int { readyRecipients + delayedRecipients }
    public var isEmpty: Bool { ready.isEmpty && delayed.isEmpty }

    /// Applies reloaded settings without dropping state.
    public func update(policy newPolicy: DomainSettings, now: UInt64) {
        policy = newPolicy
        applyRates(now: now)
    }

    // MARK: Work in and out

    /// A new or retry-now item joins the ready list.
    public func enqueue(_ item: DeliveryItem) {
        readyRecipients += item.recipients.count
        ready.append(item)
    }

    /// Puts an item taken by `take` back in front (the connection could not send it).
    public func putBack(_ item: DeliveryItem) {
        readyRecipients += item.recipients.count
        ready.prepend(item)
    }

    /// Delays an item after a transient failure: retry-after (or
    /// backoff-retry-after in backoff), never past the message's expiry.
    public func deferItem(_ item: DeliveryItem, now: UInt64) {
        var item = item
        item.attempts += 1
        let delay = policy.retryAfter(inBackoff: isBackoff).delay(afterFailures: item.attempts).nanoseconds
        let expiry = expiryTime(of: item.message)
        delayUntil(item, min(now &+ delay, max(expiry, now)))
    }

    /// Delays an item until an absolute time (queue-level deferrals, recovery).
    public func delayUntil(_ item: DeliveryItem, _ when: UInt64) {
        delayedRecipients += item.recipients.count
        deferred += UInt64(item.recipients.count)
        delayed.insert(item, at: when)
    }

    public func expiryTime(of message: QueuedMessage) -> UInt64 {
        message.receivedAt &+ policy.bounceAfter.nanoseconds
    }

    /// Moves delayed items whose time has come to the ready list. Items past
    /// their message's bounce-after are returned instead, to be bounced as expired.
    public func promoteDue(now: UInt64, expired: inout [DeliveryItem]) {
        while let item = delayed.popDue(now: now) {
            delayedRecipients -= item.recipients.count
            if now >= expiryTime(of: item.message) {
                expired.append(item)
            } else {
                enqueue(item)
            }
        }
        // Ready items can expire too when the queue is stuck (paused, suspended).
        if let head = ready.first, now >= expiryTime(of: head.message) {
            for item in ready.removeAll(where: { now >= self.expiryTime(of: $0.message) }) {
                readyRecipients -= item.recipients.count
                expired.append(item)
            }
        }
    }

    /// `schedule` (retry now): every delayed item becomes ready, and a suspension ends.
    public func retryNow() {
        for item in delayed.removeAll() {
            delayedRecipients -= item.recipients.count
            enqueue(item)
        }
        suspendedUntil = 0
        suspendReason = ""
    }

    /// Removes everything (`delete --queue`); returns the items for accounting.
    public func removeAll() -> [DeliveryItem] {
        var all = delayed.removeAll()
        while let i = ready.popFirst() { all.append(i) }
        readyRecipients = 0
        delayedRecipients = 0
        return all
    }

    /// Removes every ready item (not the delayed ones), e.g. to defer them all
    /// when the destination cannot be used (TLS required but unavailable).
    public func takeAllReady() -> [DeliveryItem] {
        var all: [DeliveryItem] = []
        while let i = ready.popFirst() { all.append(i) }
        readyRecipients = 0
        return all
    }

    /// Removes items whose message matches (`delete --jobId`).
    public func remove(where predicate: (QueuedMessage) -> Bool) -> [DeliveryItem] {
        let fromReady = ready.removeAll { predicate($0.message) }
        for i in fromReady { readyRecipients -= i.recipients.count }
        var removed = fromReady
        // Management deletes are rare: rebuilding the heap is fine.
        var rest: [(UInt64, DeliveryItem)] = []
        while let (when, item) = delayed.popFirst() {
            if predicate(item.message) { removed.append(item); delayedRecipients -= item.recipients.count }
            else { rest.append((when, item)) }
        }
        for (when, item) in rest { delayed.insert(item, at: when) }
        return removed
    }

    // MARK: Connections

    /// Whether the queue may send at all now.
    public func isSendable(now: UInt64) -> Bool {
        !isPaused && now >= suspendedUntil
    }

    /// The connection cap now: max-smtp-out (backoff-max-smtp-out in backoff),
    /// lowered while a learned receiver limit is in force.
    public func maxConnections(now: UInt64) -> Int {
        let cap = policy.maxSMTPOut(inBackoff: isBackoff)
        guard learnedConnectionCap > 0, now < learnedCapUntil else { return cap }
        return min(cap, learnedConnectionCap)
    }

    /// A connection was refused before its first transaction while `open`
    /// others of this queue remain: the receiver takes no more than those for
    /// now, so open no more until `until` (the open ones keep working).
    public func limitConnections(to open: Int, until: UInt64) {
        learnedConnectionCap = max(1, open)
        learnedCapUntil = until
    }

    /// How many new connections the engine should open now (0 while paused,
    /// suspended, throttled or when the existing ones suffice).
    public func connectionsToOpen(now: UInt64) -> Int {
        guard isSendable(now: now), !ready.isEmpty else { return 0 }
        let cap = maxConnections(now: now)
        let wanted = min(cap, ready.count) - connections
        guard wanted > 0, idleConnections == 0 else { return 0 }
        var n = 0
        while n < wanted && connectPacer.tryAcquire(now: now) { n += 1 }
        return n
    }

    /// When the connect pacer next allows a connection (for the engine's timer).
    public func nextConnectAllowed(now: UInt64) -> UInt64 { connectPacer.nextAllowed(now: now) }

    /// The next item for a connection that has sent `messagesOnConnection` so far.
    public func take(now: UInt64, messagesOnConnection: Int) -> Take {
        if !isSendable(now: now) { return .close }
        if connections > maxConnections(now: now) { return .close }
        let cap = policy.maxMsgPerConnection
        if cap > 0 && messagesOnConnection >= cap { return .close }
        guard !ready.isEmpty else { return .idle }
        if !messagePacer.tryAcquire(now: now) {
            return .wait(until: messagePacer.nextAllowed(now: now))
        }
        guard let item = ready.popFirst() else { return .idle }
        readyRecipients -= item.recipients.count
        return .item(item)
    }

    /// The earliest time something in this queue changes by itself: a delayed
    /// item comes due, or a suspension ends.
    public func nextWakeup(now: UInt64) -> UInt64? {
        var t = delayed.nextDeadline
        if suspendedUntil > now { t = min(t ?? .max, suspendedUntil) }
        return t
    }

    // MARK: Outcomes and modes

    public func noteDelivered(_ count: Int, now: UInt64) {
        delivered += UInt64(count)
        if isBackoff && policy.backoffToNormalAfterDelivery { leaveBackoff(now: now) }
    }

    public func noteBounced(_ count: Int) { bounced += UInt64(count) }

    /// Enters backoff mode (pattern list `mode=backoff` or by hand).
    public func enterBackoff(now: UInt64) {
        if mode != .backoff {
            mode = .backoff
            backoffSince = now
            applyRates(now: now)
        }
    }

    public func leaveBackoff(now: UInt64) {
        if mode != .normal {
            mode = .normal
            applyRates(now: now)
        }
    }

    /// Returns to normal mode when backoff-to-normal-after has elapsed; the
    /// engine calls this from its queue timer.
    public func checkBackoffExpiry(now: UInt64) {
        if isBackoff, let after = policy.backoffToNormalAfter?.nanoseconds, now >= backoffSince &+ after {
            leaveBackoff(now: now)
        }
    }

    /// When backoff-to-normal-after will flip the queue back, if ever.
    public func backoffEnds() -> UInt64? {
        guard isBackoff, let after = policy.backoffToNormalAfter?.nanoseconds else { return nil }
        return backoffSince &+ after
    }

    /// Suspends sending until `until` (pattern list `suspend=…`, or a queue-level
    /// deferral after every MX failed).
    public func suspend(until: UInt64, reason: String) {
        if until > suspendedUntil {
            suspendedUntil = until
            suspendReason = reason
        }
    }

    public func resume() {
        isPaused = false
        suspendedUntil = 0
        suspendReason = ""
    }

    private func applyRates(now: UInt64) {
        messagePacer.setRate(policy.maxMsgRate(inBackoff: isBackoff), now: now)
        connectPacer.setRate(policy.maxConnectRate(inBackoff: isBackoff), now: now)
    }
}
