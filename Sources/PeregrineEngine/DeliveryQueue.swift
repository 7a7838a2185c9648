import PeregrineSMTP

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
    /// Limits and mode: the queue's own, or its site's once rolled up (mx-rollup).
    public private(set) var throttle: DeliveryThrottle
    /// The MX site this queue is rolled up into, if any.
    public private(set) weak var site: DeliverySite?
    public var mode: Mode { throttle.mode }
    public var backoffSince: UInt64 { throttle.backoffSince }
    public var isPaused = false
    /// Monotonic time until which the queue sends nothing (suspend=…, or after `tq`).
    public var suspendedUntil: UInt64 { throttle.suspendedUntil }
    public var suspendReason: String { throttle.suspendReason }

    private var ready = RingBuffer<DeliveryItem>()
    private var delayed = DeadlineHeap<DeliveryItem>()
    public private(set) var readyRecipients = 0
    public private(set) var delayedRecipients = 0
    public var readyItems: Int { ready.count }
    /// When the oldest ready message was received (monotonic; ready is FIFO): the queue's age for `/metrics`.
    public var oldestReadyReceivedAt: UInt64? { ready.first?.message.receivedAt }
    public var delayedItems: Int { delayed.count }

    /// A lower connection cap learned from a receiver that refused a
    /// connection while others were open ("too many connections"), in force
    /// until `learnedCapUntil`; 0 = none.
    public var learnedConnectionCap: Int { throttle.learnedConnectionCap }
    public var learnedCapUntil: UInt64 { throttle.learnedCapUntil }

    /// Connections open or being opened for this queue, or for its site (maintained by the engine).
    public var connections: Int {
        get { throttle.connections }
        set { throttle.connections = newValue }
    }
    /// Of those, how many are idle waiting for work.
    public var idleConnections: Int {
        get { throttle.idleConnections }
        set { throttle.idleConnections = newValue }
    }

    // Counters for /queues and accounting summaries.
    public private(set) var delivered: UInt64 = 0
    public private(set) var bounced: UInt64 = 0
    public private(set) var deferred: UInt64 = 0
    /// The last reply or local reason (for /queues and expiry bounces).
    /// A remote reply is kept as is and formatted only when read: the engine
    /// notes one per recipient, most of them 250s nobody looks at.
    public var lastReply: String {
        get { lastRemoteReply?.description ?? lastReplyText }
        set { lastReplyText = newValue; lastRemoteReply = nil }
    }
    private var lastReplyText = ""
    private var lastRemoteReply: SMTPReply?

    /// Whether the queue's pattern list matches 2xx replies at all (set by the
    /// engine from its policy source): when false, a 2xx skips the list.
    public var patternsSeePositiveReplies = true

    /// Notes a remote reply as `lastReply` without formatting it.
    public func noteReply(_ reply: SMTPReply) { lastRemoteReply = reply }

    public init(key: QueueKey, policy: DomainSettings) {
        self.key = key
        self.policy = policy
        self.throttle = DeliveryThrottle(policy: policy)
    }

    public var isBackoff: Bool { throttle.isBackoff }
    public var totalRecipients: Int { readyRecipients + delayedRecipients }
    public var isEmpty: Bool { ready.isEmpty && delayed.isEmpty }

    /// Applies reloaded settings without dropping state.
    public func update(policy newPolicy: DomainSettings, now: UInt64) {
        policy = newPolicy
        if let site { site.memberPolicyChanged(now: now) } else { throttle.update(policy: newPolicy, now: now) }
    }

    /// Joins an MX site: from now on the site's limits and mode apply. The
    /// queue's own state carries over where it is stricter (a suspension).
    func join(_ site: DeliverySite, now: UInt64) {
        guard self.site !== site else { return }
        let own = throttle
        if own.suspendedUntil > now { site.throttle.suspend(until: own.suspendedUntil, reason: own.suspendReason) }
        site.throttle.connections += own.connections
        site.throttle.idleConnections += own.idleConnections
        self.site = site
        throttle = site.throttle
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

    /// `schedule` (retry now): every delayed item becomes ready, and a suspension
    /// ends (for a rolled-up queue, the site's: the operator asked to try now).
    public func retryNow() {
        for item in delayed.removeAll() {
            delayedRecipients -= item.recipients.count
            enqueue(item)
        }
        throttle.endSuspension()
    }

    /// Removes everything (`delete --queue`); returns the items for accounting.
    public func removeAll() -> [DeliveryItem] {
        var all = delayed.removeAll()
        while let i = ready.popFirst() { all.append(i) }
        readyRecipients = 0
        delayedRecipients = 0
        return all
    }

    /// Visits every ready item in order, in place, leaving it ready.
    public func updateEachReady(_ body: (inout DeliveryItem) -> Void) { ready.updateEach(body) }

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
        !isPaused && throttle.isOpen(now: now)
    }

    /// The connection cap now: max-smtp-out (backoff-max-smtp-out in backoff),
    /// lowered while a learned receiver limit is in force.
    public func maxConnections(now: UInt64) -> Int { throttle.maxConnections(now: now) }

    /// A connection was refused before its first transaction while `open`
    /// others of this queue remain: the receiver takes no more than those for
    /// now, so open no more until `until` (the open ones keep working).
    public func limitConnections(to open: Int, until: UInt64) { throttle.limitConnections(to: open, until: until) }

    /// How many new connections the engine should open now (0 while paused,
    /// suspended, throttled or when the existing ones suffice).
    public func connectionsToOpen(now: UInt64) -> Int {
        guard !isPaused else { return 0 }
        return throttle.connectionsToOpen(readyItems: ready.count, now: now)
    }

    /// When the connect pacer next allows a connection (for the engine's timer).
    public func nextConnectAllowed(now: UInt64) -> UInt64 { throttle.nextConnectAllowed(now: now) }

    /// The next item for a connection that has sent `messagesOnConnection` so far.
    public func take(now: UInt64, messagesOnConnection: Int) -> Take {
        if isPaused || throttle.mustClose(now: now, messagesOnConnection: messagesOnConnection) { return .close }
        guard !ready.isEmpty else { return .idle }
        if let until = throttle.acquireMessage(now: now) { return .wait(until: until) }
        guard let item = popReady() else { return .idle }
        return .item(item)
    }

    /// The next ready item, with no throttle check (the caller, a site, has charged its own).
    func popReady() -> DeliveryItem? {
        guard let item = ready.popFirst() else { return nil }
        readyRecipients -= item.recipients.count
        return item
    }

    /// The earliest time something in this queue changes by itself: a delayed
    /// item comes due, a suspension ends, or, while suspended, the oldest
    /// ready message expires (mail waiting out a dead destination bounces at
    /// its bounce-after, not at the next retry).
    public func nextWakeup(now: UInt64) -> UInt64? {
        var t = delayed.nextDeadline
        let suspendedUntil = throttle.suspendedUntil
        if suspendedUntil > now {
            t = min(t ?? .max, suspendedUntil)
            if let head = ready.first { t = min(t ?? .max, max(expiryTime(of: head.message), now)) }
        }
        return t
    }

    // MARK: Outcomes and modes

    public func noteDelivered(_ count: Int, now: UInt64) {
        delivered += UInt64(count)
        throttle.noteDelivered(now: now)
    }

    public func noteBounced(_ count: Int) { bounced += UInt64(count) }

    /// Enters backoff mode (pattern list `mode=backoff` or by hand); a site's queues enter it together.
    public func enterBackoff(now: UInt64) { throttle.enterBackoff(now: now) }

    public func leaveBackoff(now: UInt64) { throttle.leaveBackoff(now: now) }

    /// Returns to normal mode when backoff-to-normal-after has elapsed; the
    /// engine calls this from its queue timer.
    public func checkBackoffExpiry(now: UInt64) { throttle.checkBackoffExpiry(now: now) }

    /// When backoff-to-normal-after will flip the queue back, if ever.
    public func backoffEnds() -> UInt64? { throttle.backoffEnds() }

    /// Suspends sending until `until` (pattern list `suspend=…`, or a queue-level
    /// deferral after every MX failed); for a rolled-up queue, the whole site.
    public func suspend(until: UInt64, reason: String) { throttle.suspend(until: until, reason: reason) }

    /// Unpauses the queue and ends a suspension (a rolled-up queue's is its site's).
    public func resume() {
        isPaused = false
        throttle.endSuspension()
    }
}
