import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport
@testable import PeregrineRedis

/// Two cluster nodes (coordinators on two loops of their own, as two daemons
/// would have) sharing one real redis-server, on every backend. Addresses:
/// scenario 101 (127.P.101.(BACKEND*10 + n), PrivateLoopback), port 6379.
@Suite("Redis cluster coordination", .timeLimit(.minutes(10)), .blockingIO)
struct RedisClusterTests {

    /// One node: a loop, its connection and coordinator.
    final class Node<L: EventLoop>: @unchecked Sendable {
        let harness: CoreLoopHarness<L>
        var coordinator: RedisClusterCoordinator<L>!
        let logLines = Locked<[String]>([])
        let backoffs = Locked<[String: UInt64]>([:])

        init(_ type: L.Type, redis: SocketAddress, name: String, nodeCount: Int, leaseTTL: UInt64 = 10_000_000_000,
             prefix: String) throws {
            harness = try CoreLoopHarness(type)
            let lines = logLines, backoffs = backoffs
            let made: Bool? = harness.sync { [self] loop in
                let c = RedisConnection(loop: loop, address: redis,
                                        options: .init(commandTimeout: 2_000_000_000, initialBackoff: 20_000_000, maxBackoff: 200_000_000))
                coordinator = RedisClusterCoordinator(connection: c, options: .init(prefix: prefix, nodeName: name, nodeCount: nodeCount,
                                                                                    leaseTTL: leaseTTL, pollInterval: 100_000_000,
                                                                                    rateBatch: 20))
                coordinator.log = { line in lines.withLock { $0.append(line) } }
                coordinator.onBackoff = { q, ends in backoffs.withLock { $0[q] = ends } }
                coordinator.start()
                return true
            }
            guard made == true else { throw RedisServerError("node \(name) did not start") }
        }

        func waitShared(_ seconds: Double = 20) -> Bool {
            waitUntil(seconds) { harness.sync { [self] _ in coordinator.mode == .shared } == true }
        }

        func acquire(_ site: String, limit: Int, wanted: Int) -> Int? {
            harness.await { [self] (_: L, reply: @escaping (Int) -> Void) in
                coordinator.acquireConnections(site: site, limit: limit, wanted: wanted, reply)
            }
        }

        /// Returns once the release is written to Redis.
        func release(_ site: String, _ n: Int) {
            _ = harness.await { [self] (_: L, reply: @escaping (Bool) -> Void) in
                coordinator.releaseConnections(site: site, count: n) { reply(true) }
            }
        }

        /// Message tokens taken for `site` until one is refused with nothing left to refill.
        func takeMessages(_ site: String, perHour: Int, tries: Int) -> Int {
            var taken = 0
            for _ in 0..<tries {
                let ok: Bool? = harness.sync { [self] _ in coordinator.acquireMessage(site: site, perHour: perHour) == nil }
                if ok == true { taken += 1 } else { usleep(5_000) }
            }
            return taken
        }

        func stop() {
            _ = harness.sync { [self] _ in coordinator.stop() }
            harness.stop()
        }
    }

    static func redis(_ kind: BackendKind, host: Int) throws -> RedisServerProcess {
        let b = (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1
        let r = RedisServerProcess(ip: PrivateLoopback.address(101, b * 10 + host))
        try r.start()
        return r
    }

    /// Leases: the cluster limit holds across nodes; a release frees a slot for the other node.
    @Test(arguments: BackendKind.testable)
    func connectionLeasesHoldTheClusterLimit(_ kind: BackendKind) throws { try leases(kind.loopType) }
    func leases<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 1)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, prefix: "t1")
        defer { a.stop() }
        let b = try Node(type, redis: address, name: "b", nodeCount: 2, prefix: "t1")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        #expect(a.acquire("gmail.com", limit: 5, wanted: 4) == 4)
        #expect(b.acquire("gmail.com", limit: 5, wanted: 4) == 1)
        #expect(b.acquire("gmail.com", limit: 5, wanted: 1) == 0)
        a.release("gmail.com", 2)
        #expect(a.harness.sync { _ in a.coordinator.nodesSeen } == 2)
        #expect(b.acquire("gmail.com", limit: 5, wanted: 4) == 2)
        // Another site has its own limit.
        #expect(a.acquire("yahoo.com", limit: 3, wanted: 9) == 3)
        let stored = redis.cli(["HGETALL", "t1:conn:gmail.com"]).split(separator: "\n").map(String.init)
        #expect(stored == ["a", "2", "b", "3"])
        // What `ctl show cluster` would print for node a.
        let lines = a.harness.sync { _ in a.coordinator.status.lines } ?? []
        #expect(lines.count == 8, "\(lines)")
        #expect(Array(lines.prefix(4)) == ["node: a (1 of 2 configured)", "mode: shared",
                                           "redis: \(redis.ip):6379 connected", "nodes seen: 2"])
        #expect(Array(lines.suffix(2)) == ["leases gmail.com: 2", "leases yahoo.com: 3"])
        #expect(lines[4].hasPrefix("redis latency: ") && lines[5].hasPrefix("round trips: "))
    }

    /// One node's lease calls in flight together (two queues, two loops of
    /// one daemon) count each other: each writes the node's held count, so
    /// before they went one at a time the second overwrote the first's
    /// grant and Redis granted 4 of a limit of 3.
    @Test(arguments: BackendKind.testable)
    func leaseCallsInFlightTogetherCountEachOther(_ kind: BackendKind) throws { try pipelinedLeases(kind.loopType) }
    func pipelinedLeases<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 6)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 3, prefix: "t6")
        defer { a.stop() }
        #expect(a.waitShared())
        // Both asked in one loop turn: pipelined on the one connection.
        let both: [Int]? = a.harness.await { (_: L, reply: @escaping ([Int]) -> Void) in
            var got: [Int] = []
            for _ in 0..<2 {
                a.coordinator.acquireConnections(site: "gmail.com", limit: 3, wanted: 2) { g in
                    got.append(g)
                    if got.count == 2 { reply(got) }
                }
            }
        }
        #expect(both?.reduce(0, +) == 3, "granted \(both ?? [])")
        #expect(a.harness.sync { _ in a.coordinator.held(site: "gmail.com") } == 3)
        #expect(redis.cli(["HGET", "t6:conn:gmail.com", "a"]).trimmingCharacters(in: .whitespacesAndNewlines) == "3")
        // A release and an acquire in flight together: the count stays right.
        let after: Int? = a.harness.await { (_: L, reply: @escaping (Int) -> Void) in
            a.coordinator.releaseConnections(site: "gmail.com", count: 1)
            a.coordinator.acquireConnections(site: "gmail.com", limit: 3, wanted: 2, reply)
        }
        #expect(after == 1)
        #expect(redis.cli(["HGET", "t6:conn:gmail.com", "a"]).trimmingCharacters(in: .whitespacesAndNewlines) == "3")
    }

    /// The engine's batched tokens (takeMessageTokens): a batch per round
    /// trip, at most one batch of burst for the cluster, and in fallback
    /// this node's share one token at a time.
    @Test(arguments: BackendKind.testable)
    func messageTokensComeInBatches(_ kind: BackendKind) throws { try tokenBatches(kind.loopType) }
    func tokenBatches<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 7)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, prefix: "t7")
        defer { a.stop() }
        let b = try Node(type, redis: address, name: "b", nodeCount: 2, prefix: "t7")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        func take(_ n: Node<L>, wanted: Int) -> (Int, UInt64, UInt64)? {
            n.harness.await { (_: L, reply: @escaping ((Int, UInt64, UInt64)) -> Void) in
                // 1 token a minute: nothing new comes due during the test.
                n.coordinator.takeMessageTokens(site: "gmail.com", intervalMicros: 60_000_000, wanted: wanted) { reply(($0, $1, $2)) }
            }
        }
        let first = take(a, wanted: 10)
        #expect(first?.0 == 10)
        // The first grant's slots start now (the timeline was empty).
        #expect((first?.2 ?? .max) < 1_000_000_000)
        // The burst (one batch) is spent for the whole cluster: b gets nothing, and is told to wait about a minute.
        let second = take(b, wanted: 10)
        #expect(second?.0 == 0)
        #expect((second?.1 ?? 0) > 30_000_000_000)
        // A larger batch (more tolerance) from b: its slots follow a's ten on
        // the cluster's timeline, ten minutes on, not now.
        let third = take(b, wanted: 20)
        #expect(third?.0 == 10)
        #expect((third?.2 ?? 0) > 590_000_000_000 && (third?.2 ?? 0) <= 600_000_000_000, "\(String(describing: third))")
        #expect(a.harness.sync { _ in a.coordinator.tokensGranted(site: "gmail.com") } == 10)
        // Redis gone: fallback, this node's share (1 per 2 minutes here), one token then a wait.
        redis.kill()
        #expect(waitUntil(20) { a.harness.sync { _ in a.coordinator.mode == .fallback } == true })
        #expect(take(a, wanted: 10)?.0 == 1)
        let refused = take(a, wanted: 10)
        #expect(refused?.0 == 0 && (refused?.1 ?? 0) > 60_000_000_000)
    }

    /// A node that stops renewing (killed) loses its leases once their TTL
    /// passes; the other node then gets the whole limit.
    @Test(arguments: BackendKind.testable)
    func deadNodesLeasesLapse(_ kind: BackendKind) throws { try lapse(kind.loopType) }
    func lapse<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 2)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, leaseTTL: 1_000_000_000, prefix: "t2")
        let b = try Node(type, redis: address, name: "b", nodeCount: 2, leaseTTL: 1_000_000_000, prefix: "t2")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        #expect(a.acquire("gmail.com", limit: 4, wanted: 4) == 4)
        #expect(b.acquire("gmail.com", limit: 4, wanted: 1) == 0)
        a.stop()   // no release, no more renewals: as SIGKILL leaves it
        var got = 0
        let lapsed = waitUntil(20) {
            got += b.acquire("gmail.com", limit: 4, wanted: 4 - got) ?? 0
            if got < 4 { usleep(100_000) }
            return got == 4
        }
        #expect(lapsed, "b got \(got) of 4")
        #expect(redis.cli(["HGETALL", "t2:conn:gmail.com"]).split(separator: "\n").map(String.init) == ["b", "4"])
    }

    /// A backoff published by one node reaches the other with the same end
    /// (within the poll's granularity), within one second of publishing.
    @Test(arguments: BackendKind.testable)
    func backoffPublishedByOneNodeReachesTheOther(_ kind: BackendKind) throws { try backoff(kind.loopType) }
    func backoff<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 3)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, prefix: "t3")
        defer { a.stop() }
        let b = try Node(type, redis: address, name: "b", nodeCount: 2, prefix: "t3")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        let published = Date()
        _ = a.harness.sync { _ in a.coordinator.publishBackoff(queue: "gmail.com/vmta1", duration: 60_000_000_000) }
        let seen = waitUntil(20) { b.backoffs.withLock { $0["gmail.com/vmta1"] } != nil }
        let delay = Date().timeIntervalSince(published)
        #expect(seen)
        // The figure the issue asks for; printed, not asserted against a threshold
        // (the poll interval, 100 ms here, bounds it on an idle machine).
        print("RedisClusterTests: backoff propagation \(Int(delay * 1000)) ms on \(L.kind)")
        let remaining: UInt64? = b.harness.sync { loop in (b.backoffs.withLock { $0["gmail.com/vmta1"] } ?? 0) &- loop.now }
        // Same end as published: 60 s less the time it took to arrive.
        #expect((remaining ?? 0) > 40_000_000_000 && (remaining ?? 0) <= 60_000_000_000)
        // The publisher sees its own backoff too (it is the cluster's, not the node's).
        #expect(waitUntil(20) { a.backoffs.withLock { $0["gmail.com/vmta1"] } != nil })
    }

    /// The cluster rate is GCRA in Redis with tokens in batches: two nodes
    /// together get one batch (the tolerance) plus what the rate earns while
    /// they ask, and far fewer round trips than messages.
    @Test(arguments: BackendKind.testable)
    func messageRateIsSharedAndBatched(_ kind: BackendKind) throws { try rate(kind.loopType) }
    func rate<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 4)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, prefix: "t4")
        defer { a.stop() }
        let b = try Node(type, redis: address, name: "b", nodeCount: 2, prefix: "t4")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        let started = Date()
        // 3,600/h = one per second, batch 20: the first batch is the burst allowance.
        let takenA = a.takeMessages("gmail.com", perHour: 3600, tries: 60)
        let takenB = b.takeMessages("gmail.com", perHour: 3600, tries: 60)
        let elapsed = Date().timeIntervalSince(started)
        let allowed = 20 + Int(elapsed.rounded(.up)) + 1
        #expect(takenA + takenB <= allowed, "took \(takenA)+\(takenB) in \(elapsed) s, allowed \(allowed)")
        #expect(takenA >= 20)
        let trips = a.harness.sync { _ in a.coordinator.rateRoundTrips } ?? 0
        print("RedisClusterTests: \(takenA) messages in \(trips) round trips on \(L.kind)")
        #expect(trips > 0 && trips * 2 <= takenA + 10, "round trips \(trips) for \(takenA) messages")
    }

    /// Redis killed: both nodes switch to fallback (logged once each), each
    /// keeps to limit ÷ node count; Redis back: shared again, and a node's
    /// open connections count at once (no burst past the limit).
    @Test(arguments: BackendKind.testable)
    func fallbackSharesWhileRedisIsDown(_ kind: BackendKind) throws { try fallback(kind.loopType) }
    func fallback<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 5)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        // A short lease TTL: it is also the pause in new grants after Redis returns.
        let a = try Node(type, redis: address, name: "a", nodeCount: 3, leaseTTL: 1_000_000_000, prefix: "t5")
        defer { a.stop() }
        let b = try Node(type, redis: address, name: "b", nodeCount: 3, leaseTTL: 1_000_000_000, prefix: "t5")
        defer { b.stop() }
        #expect(a.waitShared() && b.waitShared())
        #expect(a.acquire("gmail.com", limit: 6, wanted: 1) == 1)
        redis.kill()
        let down = waitUntil(20) {
            a.harness.sync { _ in a.coordinator.mode } == .fallback && b.harness.sync { _ in b.coordinator.mode } == .fallback
        }
        #expect(down)
        // Share: 6 / 3 = 2 per node; a already holds 1. Nothing is granted in
        // the fallback's entry pause (the other nodes shed their excess first):
        // asked until granted, bounded.
        var gotA = 0, gotB = 0
        #expect(waitUntil(10) { gotA += a.acquire("gmail.com", limit: 6, wanted: 5) ?? 0; return gotA >= 1 })
        #expect(waitUntil(10) { gotB += b.acquire("gmail.com", limit: 6, wanted: 5) ?? 0; return gotB >= 2 })
        #expect(gotA == 1 && gotB == 2)
        #expect(a.acquire("gmail.com", limit: 6, wanted: 5) == 0 && b.acquire("gmail.com", limit: 6, wanted: 5) == 0)
        // Rate at 3,600/h over 3 nodes: one token now, the next 3 s later.
        #expect(b.harness.sync { _ in b.coordinator.acquireMessage(site: "gmail.com", perHour: 3600) == nil } == true)
        let next = b.harness.sync { loop in (b.coordinator.acquireMessage(site: "gmail.com", perHour: 3600) ?? 0) &- loop.now } ?? 0
        #expect(next > 2_000_000_000 && next <= 3_000_000_000)
        // Still refused while down, logged once however many calls fail.
        #expect(a.acquire("gmail.com", limit: 6, wanted: 5) == 0)
        try redis.start()
        #expect(a.waitShared(30) && b.waitShared(30))
        // Each node writes its held count on its return (before anyone is granted more).
        #expect(waitUntil(20) { redis.cli(["HGET", "t5:conn:gmail.com", "b"]).hasPrefix("2") })
        // a holds 2, b holds 2: shared again, only 2 more in the whole cluster
        // (none during the pause after the return: asked until granted, bounded).
        var more = 0
        #expect(waitUntil(20) { more += a.acquire("gmail.com", limit: 6, wanted: 5) ?? 0; return more >= 2 })
        #expect(more == 2)
        #expect(b.acquire("gmail.com", limit: 6, wanted: 5) == 0)
        let linesA = a.logLines.withLock { $0 }
        #expect(linesA.filter { $0.contains("unreachable") }.count == 1, "\(linesA)")
        #expect(linesA.filter { $0.contains("shared limits in force") }.count == 2, "\(linesA)")
    }
}

extension RedisClusterTests {
    /// The suppression stream is trimmed as it grows (XADD MAXLEN ~): 400
    /// changes published with a bound of 50 leave about 50 (Redis trims whole
    /// nodes of 100 entries), the newest; none is lost on the way out.
    @Test(arguments: BackendKind.testable)
    func suppressionStreamIsTrimmed(_ kind: BackendKind) throws { try trimmed(kind.loopType) }
    func trimmed<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.redis(L.kind, host: 8)
        defer { redis.kill() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let a = try Node(type, redis: address, name: "a", nodeCount: 2, prefix: "t8")
        defer { a.stop() }
        #expect(a.waitShared())
        let feed = Locked<RedisSuppressionSync<L>?>(nil)
        _ = a.harness.sync { _ in
            let sync = RedisSuppressionSync(coordinator: a.coordinator, maxStreamLength: 50)
            a.coordinator.suppressionSync = sync
            sync.start()
            for i in 0..<400 { sync.publish(.add, entry: Array("user\(i)@example.com".utf8), reason: 1, time: Int64(i)) }
            feed.withLock { $0 = sync }
        }
        #expect(waitUntil(30) { a.harness.sync { _ in feed.withLock { $0 }?.published } == 400 })
        let length = Int(redis.cli(["XLEN", "t8:suppression"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(length >= 50 && length <= 150, "XLEN \(length)")
        // The newest entry is kept.
        #expect(redis.cli(["XREVRANGE", "t8:suppression", "+", "-", "COUNT", "1"]).contains("user399@example.com"))
    }
}
