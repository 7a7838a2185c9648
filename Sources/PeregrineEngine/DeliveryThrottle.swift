import PeregrineConfig

/// The limits and mode that bound how fast mail goes to one receiver: the
/// connection budget, the message and connect pacers, backoff mode, a
/// suspension and a learned connection cap. A queue owns one; queues rolled
/// up into a `DeliverySite` share the site's, so a reply seen for any of
/// those domains (backoff, suspend, too many connections) holds them all.
public final class DeliveryThrottle {
    public private(set) var policy: DomainSettings
    public private(set) var mode: DeliveryQueue.Mode = .normal
    public private(set) var backoffSince: UInt64 = 0
    /// Monotonic time until which nothing is sent (suspend=…, or after `tq`).
    public private(set) var suspendedUntil: UInt64 = 0
    public private(set) var suspendReason = ""
    /// A lower connection cap learned from a receiver that refused a
    /// connection while others were open ("too many connections"), in force
    /// until `learnedCapUntil`; 0 = none.
    public private(set) var learnedConnectionCap = 0
    public private(set) var learnedCapUntil: UInt64 = 0
    /// Connections open or being opened (maintained by the engine).
    public var connections = 0
    /// Of those, how many are idle waiting for work.
    public var idleConnections = 0

    private var messagePacer: RateLimiter
    private var connectPacer: RateLimiter

    init(policy: DomainSettings) {
        self.policy = policy
        // Pacers: connections wake on timers, a tick late; the rate is kept on average.
        messagePacer = RateLimiter(rate: policy.maxMsgRate, keepsSchedule: true)
        connectPacer = RateLimiter(rate: policy.maxConnectRate, keepsSchedule: true)
    }

    var isBackoff: Bool { mode == .backoff }

    func update(policy newPolicy: DomainSettings, now: UInt64) {
        policy = newPolicy
        applyRates(now: now)
    }

    /// Not suspended, and the message rate in force is not 0 (`max-msg-rate 0`).
    func isOpen(now: UInt64) -> Bool { now >= suspendedUntil && !policy.holdsDelivery(inBackoff: isBackoff) }

    /// max-smtp-out (backoff-max-smtp-out in backoff), lowered while a learned receiver limit is in force.
    func maxConnections(now: UInt64) -> Int {
        let cap = policy.maxSMTPOut(inBackoff: isBackoff)
        guard learnedConnectionCap > 0, now < learnedCapUntil else { return cap }
        return min(cap, learnedConnectionCap)
    }

    func limitConnections(to open: Int, until: UInt64) {
        learnedConnectionCap = max(1, open)
        learnedCapUntil = until
    }

    /// New connections to open for `readyItems` waiting items (the connect pacer is charged).
    func connectionsToOpen(readyItems: Int, now: UInt64) -> Int {
        guard isOpen(now: now), readyItems > 0 else { return 0 }
        let wanted = min(maxConnections(now: now), readyItems) - connections
        guard wanted > 0, idleConnections == 0 else { return 0 }
        var n = 0
        while n < wanted && connectPacer.tryAcquire(now: now) { n += 1 }
        return n
    }

    func nextConnectAllowed(now: UInt64) -> UInt64 { connectPacer.nextAllowed(now: now) }

    /// Whether a connection that has sent `messagesOnConnection` must close (suspended, over the cap, message cap).
    func mustClose(now: UInt64, messagesOnConnection: Int) -> Bool {
        if !isOpen(now: now) || connections > maxConnections(now: now) { return true }
        let cap = policy.maxMsgPerConnection
        return cap > 0 && messagesOnConnection >= cap
    }

    /// `cluster-max-msg-rate`: tokens from the cluster (DeliveryEngine+ClusterLimits.swift); nil = no cluster rate.
    var clusterGate: ClusterMessageGate?

    /// Charges the message pacer (and the cluster's rate) for one message; nil when allowed, else when to ask again.
    func acquireMessage(now: UInt64) -> UInt64? {
        // The cluster token is looked at first and taken last, so neither limit is charged for a message the other holds back.
        if let gate = clusterGate, let until = gate.check(now: now) { return until }
        guard messagePacer.tryAcquire(now: now) else { return messagePacer.nextAllowed(now: now) }
        clusterGate?.take(now: now)
        return nil
    }

    func noteDelivered(now: UInt64) {
        if isBackoff && policy.backoffToNormalAfterDelivery { leaveBackoff(now: now) }
    }

    func enterBackoff(now: UInt64) {
        if mode != .backoff {
            mode = .backoff
            backoffSince = now
            applyRates(now: now)
        }
    }

    func leaveBackoff(now: UInt64) {
        if mode != .normal {
            mode = .normal
            applyRates(now: now)
        }
    }

    func checkBackoffExpiry(now: UInt64) {
        if isBackoff, let after = policy.backoffToNormalAfter?.nanoseconds, now >= backoffSince &+ after {
            leaveBackoff(now: now)
        }
    }

    func backoffEnds() -> UInt64? {
        guard isBackoff, let after = policy.backoffToNormalAfter?.nanoseconds else { return nil }
        return backoffSince &+ after
    }

    func suspend(until: UInt64, reason: String) {
        if until > suspendedUntil {
            suspendedUntil = until
            suspendReason = reason
        }
    }

    func endSuspension() {
        suspendedUntil = 0
        suspendReason = ""
    }

    private func applyRates(now: UInt64) {
        messagePacer.setRate(policy.maxMsgRate(inBackoff: isBackoff), now: now)
        connectPacer.setRate(policy.maxConnectRate(inBackoff: isBackoff), now: now)
    }
}
