import PeregrineIO
import PeregrineConfig

/// The cluster's shared limits as one engine sees them (issue #21,
/// CLUSTER.md). The daemon implements it around its Redis coordinator, so the
/// engine knows nothing of Redis. Called on the engine's loop; every answer
/// comes back on that loop, later (never before the call returns).
public protocol ClusterLimits: AnyObject {
    /// Up to `wanted` connection leases to `site` within the cluster-wide
    /// `limit`; `done` gets how many were granted (0: try again later).
    func acquireConnections(site: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void)
    /// Gives back `count` leases (connections closed, or granted and never opened).
    func releaseConnections(site: String, count: Int)
    /// Up to `wanted` message tokens to `site` at the cluster-wide `rate`;
    /// `done(granted, retryAt, firstSlot)`: retryAt is the monotonic time when
    /// asking again can grant more, and token k (from 0) of the grant owns the
    /// cluster's slot firstSlot + k ÷ rate (never earlier than the real one).
    func takeMessageTokens(site: String, rate: Rate, wanted: Int, _ done: @escaping (Int, UInt64, UInt64) -> Void)
}

/// The engine's cluster state: which connections hold a lease, and which
/// queues wait to ask for one again.
struct EngineClusterState {
    /// Connections opened under a lease, and the site it is for.
    var leases: [ObjectIdentifier: String] = [:]
    /// Queues refused a lease: they ask again when the timer fires, not on every kick.
    var waiting: Set<QueueKey> = []
}

extension DeliveryEngine {
    /// How long a queue refused a lease waits before asking Redis again.
    /// Short, since leases free on other nodes without telling this one; a
    /// lease freed on this loop kicks the waiting queues at once.
    static var clusterLeaseRetry: UInt64 { 100_000_000 }

    /// The name the cluster counts a queue's connections and messages under:
    /// its domain (every VMTA's queue to it, on every node, together).
    static func clusterSite(_ q: DeliveryQueue) -> String { q.key.domain }

    /// Whether `q` may ask for connections now: not while it waits to ask the cluster again.
    func mayAskCluster(_ q: DeliveryQueue) -> Bool { !cluster.waiting.contains(q.key) }

    /// Leases for `count` connections of `q` (their local slots already
    /// taken and counted in `q.connections`). Without a cluster cap `done`
    /// runs at once with `count`; with one, when Redis (or the fallback
    /// share) answers. Connections refused a lease are uncounted and their
    /// slots given back here; `done` gets the number leased and the lease site.
    func acquireClusterLeases(_ count: Int, for q: DeliveryQueue, _ done: @escaping (Int, String?) -> Void) {
        updateClusterGate(q)
        guard let limits = clusterLimits, let limit = q.policy.clusterMaxSMTPOut else { done(count, nil); return }
        let site = Self.clusterSite(q)
        limits.acquireConnections(site: site, limit: limit, wanted: count) { [unowned self] granted in
            let leased = min(granted, count)
            if self.isStopping {
                limits.releaseConnections(site: site, count: leased)
                self.giveBack(count, of: q)
                return
            }
            if leased < count {
                self.giveBack(count - leased, of: q)
                q.lastReply = "waiting for a cluster connection lease (cluster-max-smtp-out \(limit))"
                self.waitForLease(q)
            }
            if leased > 0 { done(leased, site) }
        }
    }

    private func giveBack(_ count: Int, of q: DeliveryQueue) {
        guard count > 0 else { return }
        q.connections -= count
        giveConnectionSlots(count, vmta: q.key.vmta)
    }

    private func waitForLease(_ q: DeliveryQueue) {
        let key = q.key
        guard cluster.waiting.insert(key).inserted else { return }
        // Jitter, so nodes refused together do not ask again together.
        let delay = Self.clusterLeaseRetry / 2 + UInt64.random(in: 0...Self.clusterLeaseRetry)
        loop.scheduleTimer(after: delay) { [unowned self] in
            guard self.cluster.waiting.remove(key) != nil, let q = self.queues[key] else { return }
            self.kick(q)
        }
    }

    /// Records that connection `c` holds a lease to `site`.
    func noteClusterLease(_ c: DeliveryConnection<Loop>, site: String?) {
        if let site { cluster.leases[ObjectIdentifier(c)] = site }
    }

    /// Gives back leases of connections that were granted and never opened.
    func releaseClusterLeases(_ count: Int, site: String?) {
        guard let site, count > 0 else { return }
        clusterLimits?.releaseConnections(site: site, count: count)
        wakeLeaseWaiters(site: site)
    }

    /// A connection closed: its lease (if any) goes back, and queues of this
    /// loop waiting for one to the same site ask again at once.
    func connectionLeaseEnded(_ c: DeliveryConnection<Loop>) {
        guard let site = cluster.leases.removeValue(forKey: ObjectIdentifier(c)) else { return }
        clusterLimits?.releaseConnections(site: site, count: 1)
        wakeLeaseWaiters(site: site)
    }

    /// The node went into fallback holding more connections to `site` than
    /// its share: up to `count` of this engine's leased connections to it
    /// quit after their current transaction and start no new one; idle ones
    /// quit at once, and those not in a transaction yet (connecting, at the
    /// greeting, EHLO) close at once (DeliveryConnection.shed). Leased connections already quitting count. Returns how many
    /// of the `count` this engine covers (the daemon asks the next worker
    /// for the rest).
    public func shedClusterConnections(site: String, count: Int) -> Int {
        guard count > 0 else { return 0 }
        let leased = openConnections.filter { !$0.closed && cluster.leases[ObjectIdentifier($0)] == site }
        let quitting = leased.filter(\.isRetired).count
        // Already quitting (a reload) but still at the greeting: close those now too.
        for c in leased where c.isRetired && !c.inTransaction { c.shed() }
        guard count > quitting else { return count }
        // Nothing to finish first (idle, or no transaction yet), then those mid-transaction.
        let candidates = leased.filter { !$0.isRetired }.sorted { !$0.inTransaction && $1.inTransaction }
        let shed = candidates.prefix(count - quitting)
        for c in shed { c.shed() }
        return quitting + shed.count
    }

    private func wakeLeaseWaiters(site: String) {
        guard !isStopping else { return }
        let ready = cluster.waiting.filter { $0.domain == site }
        for key in ready {
            cluster.waiting.remove(key)
            if let q = queues[key] { kick(q) }
        }
    }

    /// Puts a cluster message gate on the throttle `q` sends under when its
    /// policy sets `cluster-max-msg-rate` (and removes it when not): checked
    /// when connections open, so a reload takes effect with the new connections.
    func updateClusterGate(_ q: DeliveryQueue) {
        let throttle = q.site?.throttle ?? q.throttle
        let rate = q.policy.clusterMaxMsgRate
        guard let limits = clusterLimits, rate != .unlimited else { throttle.clusterGate = nil; return }
        if let gate = throttle.clusterGate, gate.rate == rate { return }
        let key = q.key
        throttle.clusterGate = ClusterMessageGate(site: Self.clusterSite(q), rate: rate, limits: limits) {
            [unowned self] in if let q = self.queues[key] { self.kick(q) }
        }
    }
}

/// `cluster-max-msg-rate` on one throttle: message tokens taken from the
/// cluster's GCRA a batch at a time (one Redis round trip per batch, not per
/// message). Each token of a batch owns one slot on the cluster's timeline,
/// one interval after the one before, and is spent no earlier than its slot:
/// a connection finding the next token not yet due waits for its slot (a
/// timer), and the answer to a refill kicks the queue.
///
/// Bound (CLUSTER.md, "Rate"): the timeline runs at the rate less
/// `headroomPercent` (1 %): interval = 1 ÷ (0.99 × rate), whole µs rounded up.
/// Slots are disjoint across the cluster; a token is spent between its slot
/// and `lateness` after it (else dropped: no connection was free for it).
/// A late token does not move the next one: its slot stays where the cluster
/// put it, so a token spent late may go out just before the next (on time);
/// the bound below does not depend on spacing, only on each spend lying in
/// [slot, slot + lateness] (moving later tokens made late timers cascade into
/// dropped tokens, EngineClusterGateTests.lateTimersDropNoTokens). If every message
/// reaches the receiver within E of its slot (E = lateness + the slot's
/// mapping error + the delivery's jitter), any window W holds at most
/// ⌊(W + E) ÷ interval⌋ + 1 messages at the receiver; for W = 1 s that is at
/// most the configured rate for any E < 1 ÷ 0.99 − 1 s = 10.1 ms, at every
/// rate. `lateness` takes at most `maxLateness` (3 ms) of that budget; the
/// rest (7 ms) is for the delivery's jitter.
///
/// The batch is at most one second of the rate (and at most 20).
public final class ClusterMessageGate {
    /// The share of the configured rate the cluster's timeline leaves unused:
    /// the jitter budget that keeps every second at the receiver within the rate.
    public static let headroomPercent: UInt64 = 1
    /// The most a token may be spent after its slot: part of the jitter budget.
    public static let maxLateness: UInt64 = 3_000_000
    let site: String
    let rate: Rate
    let batch: Int
    private let interval: UInt64
    /// How long after its slot a token may still be spent.
    let lateness: UInt64
    private unowned let limits: ClusterLimits
    private let onTokens: () -> Void
    private var tokens = 0
    /// The slot of the next token held.
    private var nextSlot: UInt64 = 0
    private var retryAt: UInt64 = 0
    private var refilling = false
    /// Tokens dropped unspent past their slot's lateness (status, tests).
    public private(set) var dropped = 0

    init(site: String, rate: Rate, limits: ClusterLimits, onTokens: @escaping () -> Void) {
        self.site = site
        self.rate = rate
        self.limits = limits
        // Whole µs, rounded up, as Redis keeps the timeline (WorkerClusterLimits):
        // a slot computed here is never before the cluster's.
        let interval = Self.clusterInterval(rate)
        self.interval = interval
        batch = Int(max(1, min(20, 1_000_000_000 / interval)))
        lateness = min(Self.maxLateness, max(interval, UInt64(batch) * interval / 4))
        self.onTokens = onTokens
    }

    /// The cluster's interval between tokens at `rate`: 1 ÷ (rate less the
    /// headroom) in whole µs, rounded up (never a faster rate than configured).
    public static func clusterInterval(_ rate: Rate) -> UInt64 {
        let nanos = rate.emissionIntervalNanos ?? 1_000
        let paced = (nanos.multipliedReportingOverflow(by: 100).partialValue + (99 - headroomPercent))
            / (100 - headroomPercent)
        return max(1, (paced + 999) / 1000) * 1000
    }

    /// nil when a token is due (not taken yet: `take` does), else when to look again.
    func check(now: UInt64) -> UInt64? {
        while tokens > 0 {
            if now > nextSlot + lateness {
                // Past its slot's lateness: spent now it would crowd the slots after it.
                tokens -= 1
                dropped += 1
                nextSlot += interval
                continue
            }
            // Not before its slot.
            return now >= nextSlot ? nil : nextSlot
        }
        if now >= retryAt { refill() }
        // A refill in flight kicks the queue when it lands; this is only its backstop.
        return refilling ? now + 50_000_000 : max(retryAt, now + 1_000_000)
    }

    /// Spends the token `check` found due at `now`.
    func take(now: UInt64) {
        tokens -= 1
        nextSlot += interval
    }

    /// Tokens held now, due or not (status).
    public var available: Int { tokens }

    /// Asked only when the tokens are spent (or dropped), so a grant
    /// replaces nothing and its slots follow on from the last ones.
    private func refill() {
        guard !refilling else { return }
        refilling = true
        limits.takeMessageTokens(site: site, rate: rate, wanted: batch) { [weak self] granted, retryAt, firstSlot in
            guard let self else { return }
            self.refilling = false
            self.retryAt = retryAt
            guard granted > 0 else { return }
            self.tokens = granted
            self.nextSlot = firstSlot
            self.onTokens()
        }
    }
}
