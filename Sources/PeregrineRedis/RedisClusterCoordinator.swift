import PeregrineIO

package struct RedisClusterOptions: Sendable {
    /// Prefix of every key (several clusters can share one Redis).
    package var prefix: String
    /// This node's name (`cluster-node-name`): unique in the cluster.
    package var nodeName: String
    /// Nodes configured (`cluster-node-count`): in fallback each keeps to 1/N of every limit.
    package var nodeCount: Int
    /// How long a node's connection leases outlive its last renewal; renewed every third of it.
    package var leaseTTL: UInt64
    /// How often the cluster's backoffs are read (≤ 250 ms: applied within one second).
    package var pollInterval: UInt64
    /// Message-rate tokens taken from Redis per round trip.
    package var rateBatch: Int

    package init(prefix: String = "peregrine", nodeName: String, nodeCount: Int, leaseTTL: UInt64 = 10_000_000_000,
                pollInterval: UInt64 = 200_000_000, rateBatch: Int = 20) {
        self.prefix = prefix
        self.nodeName = nodeName
        self.nodeCount = max(1, nodeCount)
        self.leaseTTL = leaseTTL
        self.pollInterval = pollInterval
        self.rateBatch = max(1, rateBatch)
    }
}

/// One node's view of the cluster's shared limits and backoffs, kept in Redis:
/// connection leases per site, a GCRA message rate per site taken in batches,
/// and queue backoffs that one node publishes and all apply.
///
/// Modes: `shared` while Redis answers; `fallback` when it does not (and
/// before the first connect): each node then keeps to its share, limit ÷
/// `nodeCount`, never the whole limit. The switch is logged once each way.
/// Back in shared mode a node's open connections are counted at once (its
/// held count is written with every call) and its unspent fallback tokens
/// are dropped, so the return brings no burst beyond one rate batch.
///
/// Loop-confined: every method runs on the loop's thread.
package final class RedisClusterCoordinator<Loop: EventLoop> {
    package enum Mode: String, Sendable { case shared, fallback }

    package let loop: Loop
    package let connection: RedisConnection<Loop>
    package let options: RedisClusterOptions
    package private(set) var mode: Mode = .fallback
    /// Log lines (mode changes); the daemon sends them to its log.
    package var log: (String) -> Void = { _ in }
    /// A queue another node (or this one) put into backoff, and the monotonic
    /// time its cluster-wide backoff ends; called on each poll that finds it
    /// new or extended.
    package var onBackoff: (String, UInt64) -> Void = { _, _ in }
    /// Fallback began while this node held more connections to a site than
    /// its share: (site, how many over). The daemon has that many of them
    /// quit after their current transaction (no new one on them), so the
    /// node comes down to its share instead of keeping the excess.
    package var onOverShare: (String, Int) -> Void = { _, _ in }
    /// Nodes holding live leases on any one site, at most, as the last lease call per site saw them (status).
    package var nodesSeen: Int { sites.values.map(\.nodesAlive).max() ?? 0 }
    /// Round trips made (status, and the per-message ratio the bench reports).
    package private(set) var roundTrips = 0
    /// Of those, the message-rate refills (round trips per message = this ÷ messages).
    package private(set) var rateRoundTrips = 0
    /// Latency of the last answered round trip, ns.
    package private(set) var lastLatency: UInt64 = 0
    /// Connection lease requests the engine made (status: a test waits on
    /// these to know a queue asked, granted or not).
    package private(set) var leaseRequests = 0
    /// Until this monotonic time no new connection is granted: Redis came
    /// back (it may have restarted empty) and the other nodes have not all
    /// written their held counts yet (see setMode).
    private var resumeGraceUntil: UInt64 = 0
    /// Until this monotonic time no new connection is granted in fallback:
    /// the other nodes lose Redis at the same moment (a dead Redis closes
    /// every node's socket) and those over their share close their excess
    /// not yet in a transaction at once (onOverShare); opening this node's
    /// share before they have would take the receiver past the cap.
    private var fallbackPauseUntil: UInt64 = 0
    /// The pause above: a node's shed takes a loop hop or two, far less.
    package static var fallbackEntryPause: UInt64 { 250_000_000 }
    /// The shared suppression list's feed, when the daemon has a list (RedisSuppressionSync).
    package var suppressionSync: RedisSuppressionSync<Loop>?
    private var everShared = false

    final class Site {
        let connKey: [UInt8], aliveKey: [UInt8], rateKey: [UInt8]
        var limit = 0
        var held = 0
        var nodesAlive = 0
        var tokens = 0
        var refilling = false
        var nextTokenAt: UInt64 = 0
        var fallbackTAT: UInt64 = 0
        var tokensGranted = 0
        var leaseCalls: [(wanted: Int, done: (Int?) -> Void)] = []
        var leaseInFlight = false
        init(prefix: String, name: String) {
            connKey = Array("\(prefix):conn:\(name)".utf8)
            aliveKey = Array("\(prefix):alive:\(name)".utf8)
            rateKey = Array("\(prefix):rate:\(name)".utf8)
        }
    }

    private var sites: [String: Site] = [:]
    private var knownBackoffs: [String: UInt64] = [:]
    private let backoffKey: [UInt8]
    private let node: [UInt8]
    private var shas: [Int: [UInt8]] = [:]
    private let scripts = [RedisClusterScripts.acquire, RedisClusterScripts.gcra,
                           RedisClusterScripts.publishBackoff, RedisClusterScripts.pollBackoff]
    private var pollTimer: TimerHandle?
    private var renewTimer: TimerHandle?
    private var polling = false
    private var stopped = false

    package init(connection: RedisConnection<Loop>, options: RedisClusterOptions) {
        self.loop = connection.loop
        self.connection = connection
        self.options = options
        backoffKey = Array("\(options.prefix):backoff".utf8)
        node = Array(options.nodeName.utf8)
    }

    /// Starts the connection, the backoff poll and the lease renewal.
    package func start() {
        connection.onConnectedChange = { [unowned self] up in
            if up { self.loadScripts(); self.setMode(.shared, "Redis at \(self.connection.address) reachable") }
            else { self.setMode(.fallback, "Redis at \(self.connection.address) unreachable: \(self.connection.lastError ?? "?")") }
        }
        log("cluster: node \(options.nodeName) of \(options.nodeCount), fallback until Redis at \(connection.address) answers")
        connection.start()
        schedulePoll()
        scheduleRenewal()
    }

    package func stop() {
        stopped = true
        suppressionSync?.stop()
        if let t = pollTimer { loop.cancelTimer(t); pollTimer = nil }
        if let t = renewTimer { loop.cancelTimer(t); renewTimer = nil }
        connection.close()
    }

    /// Sites this node has asked about.
    package var siteNames: [String] { Array(sites.keys) }

    /// Connections this node holds to `site` (status).
    package func held(site: String) -> Int { sites[site]?.held ?? 0 }

    // MARK: Connection leases

    /// Asks for up to `wanted` more connections to `site` within the cluster
    /// limit `limit`; `done` gets how many may open (0: wait for a release or
    /// a lease to lapse). Never calls `done` before returning.
    package func acquireConnections(site name: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void) {
        let site = self.site(name)
        site.limit = limit
        leaseRequests += 1
        if mode == .shared && loop.now < resumeGraceUntil {
            // Still writing this node's count; grant nothing until every node has.
            loop.scheduleTimer(after: 0) { done(0) }
            return
        }
        if mode == .fallback && connection.connects == 0 && connection.lastError == nil {
            // Starting, the first connect not answered yet: a node restarted on
            // its spool would add its fallback share to what the others hold in
            // Redis. Wait for the answer (the queue asks again shortly).
            loop.scheduleTimer(after: 0) { done(0) }
            return
        }
        if mode == .fallback && loop.now < fallbackPauseUntil {
            loop.scheduleTimer(after: 0) { done(0) }
            return
        }
        guard mode == .shared else {
            let granted = max(0, min(wanted, fallbackShare(limit) - site.held))
            site.held += granted
            loop.scheduleTimer(after: 0) { done(granted) }
            return
        }
        leaseCall(site, wanted: wanted) { [unowned self] granted in
            if let granted {
                site.held += granted
                done(granted)
            } else {   // Redis failed under us: this node's share instead (after the pause)
                let g = self.loop.now < self.fallbackPauseUntil ? 0 : max(0, min(wanted, self.fallbackShare(limit) - site.held))
                site.held += g
                done(g)
            }
        }
    }

    /// Returns `count` connections to `site` (closed). The freed slots are
    /// written at once so that other nodes can use them.
    package func releaseConnections(site name: String, count: Int, written: (() -> Void)? = nil) {
        guard let site = sites[name] else { written?(); return }
        site.held = max(0, site.held - count)
        if mode == .shared { leaseCall(site, wanted: 0) { _ in written?() } } else { written?() }
    }

    private func fallbackShare(_ limit: Int) -> Int { max(1, limit / options.nodeCount) }

    /// One acquire script call: writes this node's held count, renews its
    /// leases, grants up to `wanted` (nil: no answer from Redis).
    ///
    /// A site's calls go one at a time: each writes the node's held count,
    /// so a second call sent before the first's grant is counted would
    /// overwrite it with a stale number (and Redis would grant the same slot
    /// twice, or forget a connection).
    private func leaseCall(_ site: Site, wanted: Int, _ done: @escaping (Int?) -> Void) {
        site.leaseCalls.append((wanted, done))
        if !site.leaseInFlight { sendLeaseCall(site) }
    }

    private func sendLeaseCall(_ site: Site) {
        guard !site.leaseCalls.isEmpty else { return }
        let (wanted, done) = site.leaseCalls.removeFirst()
        site.leaseInFlight = true
        let ttlMs = Int(options.leaseTTL / 1_000_000)
        let held = site.held, limit = site.limit
        eval(0, keys: [site.connKey, site.aliveKey],
             args: { w in w.argument(self.node); w.argument(limit); w.argument(wanted); w.argument(held); w.argument(ttlMs) },
             argCount: 5) { [unowned self] r in
            site.leaseInFlight = false
            if case .array(let a)? = r, a.count == 3, let g = a[0].integerValue, let nodes = a[2].integerValue {
                site.nodesAlive = Int(nodes)
                done(Int(g))   // counts the grant in `held` before the next call writes it
            } else {
                done(nil)
            }
            self.sendLeaseCall(site)
        }
    }

    private func scheduleRenewal() {
        renewTimer = loop.scheduleTimer(after: max(options.leaseTTL / 3, 1_000_000)) { [unowned self] in
            self.renewTimer = nil
            guard !self.stopped else { return }
            if self.mode == .shared {
                for site in self.sites.values where site.held > 0 { self.leaseCall(site, wanted: 0) { _ in } }
            }
            self.scheduleRenewal()
        }
    }

    // MARK: Message rate

    /// Takes one message token for `site` at a cluster-wide `perHour`; nil
    /// when allowed, else the monotonic time to ask again. Tokens come from
    /// Redis `rateBatch` at a time, refilled before they run out, so most
    /// calls make no round trip.
    package func acquireMessage(site name: String, perHour: Int) -> UInt64? {
        guard perHour > 0 else { return nil }   // 0: unlimited, as max-msg-rate
        let site = self.site(name)
        let now = loop.now
        if mode == .fallback {
            // Local GCRA at this node's share of the rate, no burst.
            let interval = 3_600_000_000_000 / UInt64(max(1, perHour / options.nodeCount))
            let tat = max(site.fallbackTAT, now)
            guard tat <= now else { return tat }
            site.fallbackTAT = tat + interval
            return nil
        }
        if site.tokens > 0 {
            site.tokens -= 1
            if site.tokens <= options.rateBatch / 2 && now >= site.nextTokenAt { refill(site, perHour: perHour) }
            return nil
        }
        // Out of tokens: ask Redis again only once the next token is due
        // (Redis said when), not on every refused message.
        if now >= site.nextTokenAt { refill(site, perHour: perHour) }
        return max(now + 1_000_000, site.nextTokenAt)
    }

    private func refill(_ site: Site, perHour: Int) {
        guard !site.refilling else { return }
        site.refilling = true
        let intervalUs = max(1, 3_600_000_000 / perHour)
        let batch = options.rateBatch
        // Tolerance of one batch: a node may take a batch ahead, never more.
        eval(1, keys: [site.rateKey], args: { w in w.argument(intervalUs); w.argument(intervalUs * batch); w.argument(batch) },
             argCount: 3) { [unowned self] r in
            site.refilling = false
            self.rateRoundTrips += 1
            guard case .array(let a)? = r, a.count >= 2, let g = a[0].integerValue, let wait = a[1].integerValue else { return }
            guard self.mode == .shared else { return }
            site.tokens += Int(g)
            site.nextTokenAt = self.loop.now + UInt64(max(0, wait)) * 1000
        }
    }

    /// Takes up to `wanted` message tokens for `site`, one per
    /// `intervalMicros` across the cluster with a burst of at most `wanted`
    /// (the caller's batch), never fewer than half of it;
    /// `done(granted, ns until asking again can grant, ns until the first
    /// token's slot)`: token k may be spent from that slot + k × interval,
    /// not before (RedisClusterScripts.gcra). One round trip per call. In
    /// fallback (or when Redis fails under the call): a local GCRA at this
    /// node's share of the rate, one token at a time, due now, no burst.
    /// May call `done` before returning.
    package func takeMessageTokens(site name: String, intervalMicros: Int, wanted: Int,
                                   _ done: @escaping (Int, UInt64, UInt64) -> Void) {
        let site = self.site(name)
        let interval = max(1, intervalMicros), batch = max(1, wanted)
        guard mode == .shared else {
            done(fallbackToken(site, intervalMicros: interval), fallbackWait(site, intervalMicros: interval), 0)
            return
        }
        // At least half a batch per grant: gates refused wait for it rather than take tokens one round trip each.
        let minimum = (batch + 1) / 2
        eval(1, keys: [site.rateKey], args: { w in w.argument(interval); w.argument(interval * batch); w.argument(batch); w.argument(minimum) },
             argCount: 4) { [unowned self] r in
            self.rateRoundTrips += 1
            guard case .array(let a)? = r, a.count == 3, let g = a[0].integerValue, let wait = a[1].integerValue,
                  let start = a[2].integerValue else {
                done(self.fallbackToken(site, intervalMicros: interval), self.fallbackWait(site, intervalMicros: interval), 0)
                return
            }
            site.tokensGranted += Int(g)
            done(Int(g), UInt64(max(0, wait)) * 1000, UInt64(max(0, start)) * 1000)
        }
    }

    /// One token of this node's share of the rate if it is due (1), else 0.
    private func fallbackToken(_ site: Site, intervalMicros: Int) -> Int {
        let share = UInt64(intervalMicros) * 1000 * UInt64(options.nodeCount)
        let now = loop.now
        let tat = max(site.fallbackTAT, now)
        guard tat <= now else { return 0 }
        site.fallbackTAT = tat + share
        site.tokensGranted += 1
        return 1
    }

    private func fallbackWait(_ site: Site, intervalMicros: Int) -> UInt64 {
        let now = loop.now
        return site.fallbackTAT > now ? site.fallbackTAT - now : 0
    }

    /// Message tokens this node has been granted for `site` (status).
    package func tokensGranted(site: String) -> Int { sites[site]?.tokensGranted ?? 0 }

    // MARK: Backoff

    /// Puts `queue` into backoff on every node for `duration` ns (extends, never shortens).
    package func publishBackoff(queue: String, duration: UInt64) {
        let ms = Int(duration / 1_000_000)
        eval(2, keys: [backoffKey], args: { w in w.argument(queue.utf8); w.argument(ms) }, argCount: 2) { _ in }
    }

    private func schedulePoll() {
        pollTimer = loop.scheduleTimer(after: options.pollInterval) { [unowned self] in
            self.pollTimer = nil
            guard !self.stopped else { return }
            self.poll()
            self.schedulePoll()
        }
    }

    private func poll() {
        guard mode == .shared, !polling else { return }
        polling = true
        eval(3, keys: [backoffKey], args: { _ in }, argCount: 0) { [unowned self] r in
            self.polling = false
            guard case .array(let a)? = r else { return }
            let now = self.loop.now
            var i = 0
            var live: [String: UInt64] = [:]
            while i + 1 < a.count {
                if let q = a[i].stringValue, let ms = a[i + 1].integerValue, ms > 0 {
                    let ends = now + UInt64(ms) * 1_000_000
                    live[q] = ends
                    // New, or extended by more than the poll's own jitter: tell the engine.
                    if let known = self.knownBackoffs[q], ends < known + 1_000_000_000 { live[q] = known } else {
                        self.onBackoff(q, ends)
                    }
                }
                i += 2
            }
            self.knownBackoffs = live
        }
    }

    // MARK: Scripts and mode

    private func setMode(_ m: Mode, _ why: String) {
        guard m != mode else { return }
        mode = m
        for site in sites.values { site.tokens = 0; site.refilling = false }
        switch m {
        case .shared:
            log("cluster: \(why); shared limits in force")
            // Back after an outage: Redis may have restarted empty, and a node
            // that reconnects first would be granted the connections the others
            // still hold (the burst). No new lease until every live node has
            // reconnected (its next attempt comes within the reconnect cap) and
            // written its held count (at once on resume, then every TTL/3): the
            // longer of one lease TTL and the reconnect cap + 1 s. Not on the
            // first connect: then the others' counts are in Redis already.
            if everShared {
                resumeGraceUntil = loop.now + max(options.leaseTTL, connection.options.maxBackoff + 1_000_000_000)
            }
            everShared = true
            // Count this node's open connections in Redis before anyone is granted more.
            for site in sites.values where site.held > 0 { leaseCall(site, wanted: 0) { _ in } }
        case .fallback:
            resumeGraceUntil = 0   // the fallback share applies now, not the pause
            fallbackPauseUntil = loop.now + Self.fallbackEntryPause
            log("cluster: \(why); each node keeps to 1/\(options.nodeCount) of every cluster limit")
            // Held in shared mode beyond the share: shed after the current
            // transaction. Until they close, `held` stays over the share and
            // nothing new is granted (acquireConnections).
            for (name, site) in sites.sorted(by: { $0.key < $1.key }) where site.limit > 0 {
                let excess = site.held - fallbackShare(site.limit)
                guard excess > 0 else { continue }
                log("cluster: \(name): holding \(site.held) connections, \(excess) over the fallback share of "
                    + "\(fallbackShare(site.limit)); closing \(excess) after their current message")
                onOverShare(name, excess)
            }
        }
    }

    private func loadScripts() {
        shas = [:]
        for (i, text) in scripts.enumerated() {
            connection.send(["SCRIPT", "LOAD", text]) { [unowned self] r in
                if case .success(.bulk(let sha)) = r { self.shas[i] = sha }
            }
        }
    }

    /// EVALSHA once the script is loaded, EVAL before (and after a NOSCRIPT:
    /// Redis restarted and forgot it). `done` gets nil when Redis did not answer.
    private func eval(_ script: Int, keys: [[UInt8]], args: @escaping (inout RESPCommandWriter) -> Void, argCount: Int,
                      _ done: @escaping (RESPValue?) -> Void) {
        let started = loop.now
        let sha = shas[script]
        connection.send(argumentCount: 3 + keys.count + argCount, { w in
            if let sha { w.argument("EVALSHA".utf8); w.argument(sha) } else { w.argument("EVAL".utf8); w.argument(self.scripts[script].utf8) }
            w.argument(keys.count)
            for k in keys { w.argument(k) }
            args(&w)
        }) { [unowned self] r in
            self.roundTrips += 1
            switch r {
            case .success(let v):
                self.lastLatency = self.loop.now - started
                if let e = v.errorText {
                    if e.hasPrefix("NOSCRIPT") && sha != nil {
                        self.shas[script] = nil
                        self.eval(script, keys: keys, args: args, argCount: argCount, done)
                        self.loadScripts()
                        return
                    }
                    self.log("cluster: Redis refused a script call: \(e)")
                    done(nil)
                    return
                }
                done(v)
            case .failure:
                // The connection reports the loss (fallback) through onConnectedChange.
                done(nil)
            }
        }
    }

    private func site(_ name: String) -> Site {
        if let s = sites[name] { return s }
        let s = Site(prefix: options.prefix, name: name)
        sites[name] = s
        return s
    }
}

/// What `ctl show cluster` and the metrics report about one node.
package struct RedisClusterStatus: Sendable, Equatable {
    package var node: String
    package var nodeCount: Int
    package var mode: String
    package var redis: String
    package var connected: Bool
    package var lastError: String?
    package var nodesSeen: Int
    /// Connections this node holds, per site (sorted by site).
    package var leases: [String: Int]
    package var lastLatencyMicroseconds: UInt64
    package var roundTrips: Int
    package var rateRoundTrips: Int
    package var leaseRequests: Int = 0

    /// The text `ctl show cluster` prints: one fact a line.
    package var lines: [String] {
        var out = [
            "node: \(node) (1 of \(nodeCount) configured)",
            "mode: \(mode)",
            "redis: \(redis) \(connected ? "connected" : "not connected")" + (lastError.map { " (last error: \($0))" } ?? ""),
            "nodes seen: \(nodesSeen)",
            "redis latency: \(lastLatencyMicroseconds) us",
            "round trips: \(roundTrips) (rate refills \(rateRoundTrips))",
        ]
        for site in leases.keys.sorted() { out.append("leases \(site): \(leases[site] ?? 0)") }
        return out
    }
}

extension RedisClusterCoordinator {
    package var status: RedisClusterStatus {
        var leases: [String: Int] = [:]
        for name in siteNames where held(site: name) > 0 { leases[name] = held(site: name) }
        return RedisClusterStatus(node: options.nodeName, nodeCount: options.nodeCount, mode: mode.rawValue,
                                  redis: "\(connection.address)", connected: connection.isConnected,
                                  lastError: connection.lastError, nodesSeen: nodesSeen, leases: leases,
                                  lastLatencyMicroseconds: lastLatency / 1000, roundTrips: roundTrips,
                                  rateRoundTrips: rateRoundTrips, leaseRequests: leaseRequests)
    }
}
