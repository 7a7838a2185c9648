import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport
@testable import PeregrineRedis

/// RedisConnection against a real redis-server on every backend, and against
/// a silent TCP peer for the timeout and queue bound. Addresses: scenario 100
/// (127.P.100.(BACKEND*10 + n), PrivateLoopback), redis on port 6379.
@Suite("Redis connection", .timeLimit(.minutes(10)), .blockingIO)
struct RedisConnectionTests {

    static func ip(_ kind: BackendKind, host: Int) -> String {
        let b = (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1
        return PrivateLoopback.address(100, b * 10 + host)
    }

    static func startRedis(_ kind: BackendKind, host: Int) throws -> RedisServerProcess {
        let r = RedisServerProcess(ip: ip(kind, host: host))
        try r.start()
        return r
    }

    @Test(arguments: BackendKind.testable)
    func setGetPipelinedIncrsAndEvalsha(_ kind: BackendKind) throws { try commands(kind.loopType) }
    func commands<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.startRedis(L.kind, host: 1)
        defer { redis.kill() }
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let out: [String]? = h.await(60) { loop, reply in
            let c = RedisConnection(loop: loop, address: address)
            c.start()
            var log: [String] = []
            let binary: [UInt8] = [0, 13, 10, 255, 36]
            c.send(argumentCount: 3, { w in w.argument("SET".utf8); w.argument("bin".utf8); w.argument(binary) }) { r in
                log.append("SET \(r)")
            }
            c.send(["GET", "bin"]) { r in log.append("GET same bytes: \((try? r.get())?.bytes == binary)") }
            c.send(["GET", "missing"]) { r in log.append("GET missing \(r)") }
            // 1,000 INCRs written in one turn: all outstanding at once, answered in order.
            var incrs: [Int64] = []
            var incrFailures = 0
            for _ in 0..<1000 {
                c.send(argumentCount: 2, { w in w.argument("INCR".utf8); w.argument("counter".utf8) }) { r in
                    if case .success(.integer(let v)) = r { incrs.append(v) } else { incrFailures += 1 }
                }
            }
            log.append("outstanding after issuing: \(c.outstanding)")
            let script = "return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[1])}"
            c.send(["SCRIPT", "LOAD", script]) { r in
                guard case .success(.bulk(let sha)) = r else { log.append("SCRIPT LOAD \(r)"); reply(log); return }
                log.append("sha length \(sha.count)")
                c.send(argumentCount: 5, { w in
                    w.argument("EVALSHA".utf8); w.argument(sha); w.argument(1); w.argument("counter".utf8); w.argument(5)
                }) { r in
                    log.append("EVALSHA \(r)")
                    c.send(["EVALSHA", String(repeating: "0", count: 40), "0"]) { r in
                        log.append("unknown sha: \((try? r.get())?.errorText?.hasPrefix("NOSCRIPT") == true)")
                        log.append("incrs in order: \(incrs == Array(1...1000)) failures \(incrFailures)")
                        log.append("connects \(c.connects) outstanding \(c.outstanding)")
                        c.close()
                        reply(log)
                    }
                }
            }
        }
        #expect(out == [
            "outstanding after issuing: 1003",
            "SET success(+OK)", "GET same bytes: true", "GET missing success((nil))",
            "sha length 40",
            "EVALSHA success([$counter, $5, :1005])",
            "unknown sha: true",
            "incrs in order: true failures 0",
            "connects 1 outstanding 0",
        ])
    }

    /// Redis killed (SIGKILL) under a live connection: outstanding and new
    /// commands fail rather than hang, the connection reports the loss once,
    /// and once Redis is back it reconnects by itself.
    @Test(arguments: BackendKind.testable)
    func reconnectsAfterRedisIsKilledAndRestarted(_ kind: BackendKind) throws { try restart(kind.loopType) }
    func restart<L: EventLoop>(_ type: L.Type) throws {
        let redis = try Self.startRedis(L.kind, host: 2)
        defer { redis.kill() }
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let address = try SocketAddress(ip: redis.ip, port: redis.port)
        let changes = Locked<[Bool]>([])
        let slot = Locked<RedisConnection<L>?>(nil)
        let first: String? = h.await(30) { loop, reply in
            let c = RedisConnection(loop: loop, address: address,
                                    options: .init(initialBackoff: 20_000_000, maxBackoff: 200_000_000))
            c.onConnectedChange = { up in changes.withLock { $0.append(up) } }
            slot.withLock { $0 = c }
            c.start()
            c.send(["SET", "k", "before"]) { r in reply("\(r)") }
        }
        #expect(first == "success(+OK)")
        redis.kill()
        // The loss is seen (a receive of EOF/ECONNRESET): wait for it, bounded.
        let lost = waitUntil(20) { changes.withLock { $0 } == [true, false] }
        #expect(lost, "changes: \(changes.withLock { $0 })")
        let whileDown: String? = h.await(30) { loop, reply in
            slot.withLock { $0 }?.send(["GET", "k"]) { r in
                if case .failure(.unavailable) = r { reply("unavailable") } else { reply("\(r)") }
            }
        }
        #expect(whileDown == "unavailable")
        try redis.start()
        // Retry (bounded) until the reconnect has happened and a command goes through.
        var after = ""
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            after = h.await(10) { (loop: L, reply: @escaping (String) -> Void) in
                slot.withLock { $0 }?.send(["SET", "k", "after"]) { r in reply("\(r)") }
            } ?? "no answer"
            if after == "success(+OK)" { break }
            usleep(20_000)
        }
        #expect(after == "success(+OK)")
        let summary: String? = h.sync { _ in
            let c = slot.withLock { $0 }
            defer { c?.close() }
            return "connects \(c?.connects ?? -1)"
        }
        #expect(summary == "connects 2")
        // The last change is the close.
        #expect(changes.withLock { $0 } == [true, false, true, false])
        #expect(redis.cli(["GET", "k"]).trimmingCharacters(in: .whitespacesAndNewlines) == "after")
    }

    /// A peer that accepts and never answers: the oldest command's deadline
    /// fails everything outstanding with `.timedOut`, and commands beyond
    /// `maxOutstanding` fail at once with `.queueFull` (the queue is bounded).
    @Test(arguments: BackendKind.testable)
    func silentPeerTimesOutAndQueueIsBounded(_ kind: BackendKind) throws { try silent(kind.loopType) }
    func silent<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let listenAddress = try SocketAddress(ip: Self.ip(L.kind, host: 3), port: 0)
        let out: [String]? = h.await(60) { loop, reply in
            var held: [Socket] = []
            guard let listener = try? loop.listen(on: listenAddress,
                                                  onAccept: { r in if case .success(let a) = r { held.append(a.socket) } })
            else { reply(["listen failed"]); return }
            let address = listener.address
            let c = RedisConnection(loop: loop, address: address,
                                    options: .init(commandTimeout: 300_000_000, maxOutstanding: 3,
                                                   initialBackoff: 10_000_000_000, maxBackoff: 10_000_000_000))
            c.start()
            var log: [String] = []
            for i in 0..<4 {
                c.send(["PING"]) { r in
                    log.append("\(i): \(r)")
                    guard log.count == 4 else { return }
                    log.append("state \(c.state) outstanding \(c.outstanding) lastError \(c.lastError ?? "-")")
                    c.close()
                    for s in held { loop.close(s) }
                    loop.closeListener(listener)
                    reply(log)
                }
            }
        }
        #expect(out == [
            "3: failure(Redis command queue full)",
            "0: failure(Redis command timed out)",
            "1: failure(Redis command timed out)",
            "2: failure(Redis command timed out)",
            // closing: the silent socket's receive is still being cancelled.
            "state closing outstanding 0 lastError no reply within 300 ms",
        ])
    }

    /// Nothing listening: the connect fails, queued commands fail as
    /// unavailable, and the reconnect delays grow and stay within their cap.
    @Test func reconnectDelaysDoubleWithJitterUpToTheCap() {
        var random = SeededRandom(seed: 1)
        var ceilings: [UInt64] = []
        for attempt in 1...12 {
            let d = RedisConnection<EpollLoop>.reconnectDelay(attempt: attempt, initial: 50, cap: 5000, random: &random)
            let ceiling = min(5000, UInt64(50) << UInt64(attempt - 1))
            #expect(d >= ceiling / 2 && d <= ceiling, "attempt \(attempt): \(d) outside [\(ceiling / 2), \(ceiling)]")
            ceilings.append(ceiling)
        }
        #expect(ceilings == [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000, 5000])
        // No overflow on a huge attempt count.
        #expect(RedisConnection<EpollLoop>.reconnectDelay(attempt: 10_000, initial: 1 << 62, cap: .max, random: &random) >= UInt64.max / 2)
        // Jitter: not all equal.
        let draws = (0..<20).map { _ in RedisConnection<EpollLoop>.reconnectDelay(attempt: 8, initial: 50, cap: 5000, random: &random) }
        #expect(Set(draws).count > 10)
    }

    /// "Connected" means Redis answered: a peer that accepts and closes at
    /// once (a proxy with no Redis behind it) is never reported connected, and
    /// its attempts count as failures, so the reconnects back off.
    @Test(arguments: BackendKind.testable)
    func peerThatAcceptsAndClosesIsNeverConnected(_ kind: BackendKind) throws { try acceptsAndCloses(kind.loopType) }
    func acceptsAndCloses<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let listenAddress = try SocketAddress(ip: Self.ip(L.kind, host: 5), port: 0)
        let accepted = Locked(0), changes = Locked<[Bool]>([])
        let slot = Locked<(RedisConnection<L>, Listener)?>(nil)
        let started: Bool? = h.sync { loop in
            guard let listener = try? loop.listen(on: listenAddress, onAccept: { r in
                if case .success(let a) = r { accepted.withLock { $0 += 1 }; loop.close(a.socket) }
            }) else { return false }
            let c = RedisConnection(loop: loop, address: listener.address,
                                    options: .init(commandTimeout: 2_000_000_000, initialBackoff: 20_000_000, maxBackoff: 100_000_000))
            c.onConnectedChange = { up in changes.withLock { $0.append(up) } }
            c.start()
            slot.withLock { $0 = (c, listener) }
            return true
        }
        #expect(started == true)
        var everConnected = false
        #expect(waitUntil(20) {
            let up: Bool? = h.sync { _ in slot.withLock { $0 }?.0.isConnected ?? false }
            everConnected = everConnected || up == true
            return accepted.withLock { $0 } >= 3
        })
        let summary: String? = h.sync { loop in
            guard let (c, listener) = slot.withLock({ $0 }) else { return "no connection" }
            defer { c.close(); loop.closeListener(listener) }
            return "connects \(c.connects) backing off \(c.failedAttempts >= 2) error \(c.lastError != nil)"
        }
        // The error is the close (EOF) or a reset, as the peer's close lands.
        #expect(summary == "connects 0 backing off true error true")
        #expect(!everConnected)
        #expect(changes.withLock { $0 }.isEmpty)
    }

    /// A peer that accepts and never answers: the handshake's PING meets its
    /// deadline; never connected, nothing reported, the command queued
    /// meanwhile fails as timed out.
    @Test(arguments: BackendKind.testable)
    func peerThatNeverAnswersIsNeverConnected(_ kind: BackendKind) throws { try neverAnswers(kind.loopType) }
    func neverAnswers<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let listenAddress = try SocketAddress(ip: Self.ip(L.kind, host: 6), port: 0)
        let changes = Locked<[Bool]>([])
        let out: String? = h.await(30) { loop, reply in
            var held: [Socket] = []
            guard let listener = try? loop.listen(on: listenAddress, onAccept: { r in
                if case .success(let a) = r { held.append(a.socket) }
            }) else { reply("listen failed"); return }
            let c = RedisConnection(loop: loop, address: listener.address,
                                    options: .init(commandTimeout: 300_000_000, initialBackoff: 10_000_000_000, maxBackoff: 10_000_000_000))
            c.onConnectedChange = { up in changes.withLock { $0.append(up) } }
            c.start()
            var seen: [String] = []
            // Sampled while the PING waits: open, not connected.
            _ = loop.scheduleTimer(after: 150_000_000) { seen.append("at 150 ms: \(c.state) connected \(c.isConnected)") }
            c.send(["GET", "k"]) { r in
                seen.append("GET: \(r)")
                seen.append("connects \(c.connects) state \(c.state) lastError \(c.lastError ?? "-")")
                c.close()
                for s in held { loop.close(s) }
                loop.closeListener(listener)
                reply(seen.joined(separator: "; "))
            }
        }
        #expect(out == "at 150 ms: handshaking connected false; GET: failure(Redis command timed out); "
                + "connects 0 state closing lastError no reply within 300 ms")
        #expect(changes.withLock { $0 }.isEmpty)
    }

    @Test(arguments: BackendKind.testable)
    func nothingListeningFailsAsUnavailable(_ kind: BackendKind) throws { try refused(kind.loopType) }
    func refused<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let address = try SocketAddress(ip: Self.ip(L.kind, host: 4), port: 6379)
        let out: String? = h.await(30) { loop, reply in
            let c = RedisConnection(loop: loop, address: address)
            c.start()
            c.send(["PING"]) { r in
                let text: String
                if case .failure(.unavailable(let why)) = r { text = "unavailable: \(why.contains("connect to"))" } else { text = "\(r)" }
                reply("\(text) state \(c.state) attempts \(c.failedAttempts)")
                c.close()
            }
        }
        #expect(out == "unavailable: true state waitingToReconnect attempts 1")
    }
}

/// Polls `condition` until it holds or `seconds` pass (a bounded wait for an event).
func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
