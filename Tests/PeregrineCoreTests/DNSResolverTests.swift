import Testing
import Foundation
import PeregrineIO
@testable import PeregrineDNS

/// A record the test responder serves.
struct TestRR {
    enum Kind { case mx(UInt16, String), a(String), cname(String) }
    var name: String
    var ttl: UInt32 = 300
    var kind: Kind
}

/// What the test responder answers for one (name, type).
enum TestReply {
    case records(answers: [TestRR], additional: [TestRR] = [])
    /// NOERROR, empty answer, SOA in authority with this negative TTL.
    case noData(negativeTTL: UInt32)
    case nxdomain(negativeTTL: UInt32)
    case servfail
    /// NOERROR with the TC bit and nothing in it.
    case truncatedEmpty
    /// Never answers.
    case drop
}

/// A tiny authoritative-style UDP responder on the test's loop, answering
/// from a table and counting the queries it receives. Encodes with the
/// project's DNS codec.
final class TestDNSResponder<L: EventLoop> {
    let loop: L
    let socket: Socket
    let address: SocketAddress
    var zone: [String: [UInt16: TestReply]] = [:]
    /// Queries received, as "name/TYPE" (e.g. "example.com/MX").
    var received: [String] = []
    /// Drop the first N queries for a "name/TYPE" (to force a timeout and a retry).
    var dropFirst: [String: Int] = [:]
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)

    init(loop: L) throws {
        self.loop = loop
        socket = try loop.openUDP(boundTo: try SocketAddress(ip: "127.0.0.1", port: 0))
        address = try #require(loop.localAddress(of: socket))
        receive()
    }

    func set(_ name: String, _ type: UInt16, _ reply: TestReply) { zone[name, default: [:]][type] = reply }

    func count(_ key: String) -> Int { received.filter { $0 == key }.count }

    func close() { loop.close(socket) }

    private func receive() {
        loop.receiveDatagram(socket, into: buffer) { [self] result in
            guard case .success(let (n, from)) = result else { return }   // cancelled on close
            if let q = TestDNSWire.decodeQuery(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
                let key = "\(q.name)/\(TestDNSWire.typeName(q.type))"
                received.append(key)
                if let d = dropFirst[key], d > 0 {
                    dropFirst[key] = d - 1
                } else {
                    let reply = zone[q.name]?[q.type] ?? (zone[q.name] == nil ? .nxdomain(negativeTTL: 60) : .noData(negativeTTL: 60))
                    if let bytes = TestDNSWire.encodeReply(id: q.id, name: q.name, type: q.type, reply) {
                        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
                        bytes.withUnsafeBytes { out.copyMemory(from: $0) }
                        loop.sendDatagram(socket, to: from, UnsafeRawBufferPointer(out)) { _ in out.deallocate() }
                    }
                }
            }
            receive()
        }
    }
}

let typeA: UInt16 = 1, typeMX: UInt16 = 15

/// Everything one resolver test needs on one loop.
///
/// The default query timeout (10 s) is a deadline, not a threshold: the
/// responder answers in microseconds, so the exact query counts the tests
/// check cannot be changed by a retry unless the machine stalls for 10 s.
/// (At 200 ms, a loaded machine retried and broke "queries: 1".)
final class ResolverFixture<L: EventLoop> {
    let responder: TestDNSResponder<L>
    let resolver: DNSResolver<L>
    init(loop: L, timeout: UInt64 = 10_000_000_000, attempts: Int = 3) throws {
        responder = try TestDNSResponder(loop: loop)
        resolver = try DNSResolver(loop: loop, options: .init(servers: [responder.address], timeout: timeout,
                                                              attempts: attempts, shuffleEqualPreference: false))
    }
    func close() { resolver.close(); responder.close() }
}

private func summary(_ r: Result<[MXHost], DNSResolutionError>?) -> String {
    switch r {
    case .success(let hosts)?: return hosts.map(\.description).joined(separator: "; ")
    case .failure(let e)?: return "error: \(e)"
    case nil: return "no answer"
    }
}

@Suite("DNS resolver", .timeLimit(.minutes(10)), .blockingIO)
struct DNSResolverTests {

    @Test(arguments: BackendKind.testable)
    func mxInPreferenceOrderWithAddresses(_ kind: BackendKind) throws { try mxOrder(kind.loopType) }
    func mxOrder<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let out: (String, [String])? = h.await { loop, reply in
            guard let f = try? ResolverFixture(loop: loop) else { reply(("fixture failed", [])); return }
            f.responder.set("example.com", typeMX, .records(answers: [
                TestRR(name: "example.com", kind: .mx(20, "mx2.example.net")),
                TestRR(name: "example.com", kind: .mx(10, "mx1.example.com")),
                TestRR(name: "example.com", kind: .mx(10, "mx1b.example.com")),
            ], additional: [TestRR(name: "mx1.example.com", kind: .a("127.0.0.11"))]))
            f.responder.set("mx1b.example.com", typeA, .records(answers: [
                TestRR(name: "mx1b.example.com", kind: .a("127.0.0.12")),
                TestRR(name: "mx1b.example.com", kind: .a("127.0.0.13"))]))
            f.responder.set("mx2.example.net", typeA, .records(answers: [
                TestRR(name: "mx2.example.net", kind: .cname("real.example.net")),
                TestRR(name: "real.example.net", kind: .a("127.0.0.20"))]))
            f.resolver.resolveMX("Example.COM.") { r in
                reply((summary(r), f.responder.received.sorted()))
                f.close()
            }
        }
        let (text, queries) = try #require(out)
        #expect(text == "10 mx1.example.com [127.0.0.11]; 10 mx1b.example.com [127.0.0.12, 127.0.0.13]; 20 mx2.example.net [127.0.0.20]")
        // mx1's address came from the additional section: no A query for it.
        #expect(queries == ["example.com/MX", "mx1b.example.com/A", "mx2.example.net/A"])
    }

    @Test(arguments: BackendKind.testable)
    func aFallbackAndNoMX(_ kind: BackendKind) throws { try fallback(kind.loopType) }
    func fallback<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let out: [String]? = h.await { loop, reply in
            guard let f = try? ResolverFixture(loop: loop) else { reply(["fixture failed"]); return }
            f.responder.set("nomx.example", typeMX, .noData(negativeTTL: 60))
            f.responder.set("nomx.example", typeA, .records(answers: [TestRR(name: "nomx.example", kind: .a("127.0.0.5"))]))
            f.responder.set("bare.example", typeMX, .noData(negativeTTL: 60))
            f.responder.set("bare.example", typeA, .noData(negativeTTL: 60))
            f.responder.set("null.example", typeMX, .records(answers: [TestRR(name: "null.example", kind: .mx(0, ""))]))
            var results: [String] = []
            f.resolver.resolveMX("nomx.example") { r in
                results.append(summary(r))
                f.resolver.resolveMX("nomx.example", fallbackToA: false) { r in
                    results.append(summary(r))
                    if case .failure(let e) = r { results.append("permanent=\(e.isPermanent)") }
                    f.resolver.resolveMX("bare.example") { r in
                        results.append(summary(r))
                        f.resolver.resolveMX("null.example") { r in
                            results.append(summary(r))
                            results.append(contentsOf: f.responder.received)
                            reply(results)
                            f.close()
                        }
                    }
                }
            }
        }
        #expect(out == [
            "0 nomx.example [127.0.0.5]",
            "error: nomx.example: no MX records", "permanent=true",
            "error: bare.example: no MX or address records",
            "error: null.example: null MX, the domain accepts no mail",
            // The second nomx.example lookup came from the (negative) cache.
            "nomx.example/MX", "nomx.example/A", "bare.example/MX", "bare.example/A", "null.example/MX",
        ])
    }

    @Test(arguments: BackendKind.testable)
    func nxdomainIsPermanentServfailIsTransient(_ kind: BackendKind) throws { try failures(kind.loopType) }
    func failures<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let out: [String]? = h.await { loop, reply in
            guard let f = try? ResolverFixture(loop: loop) else { reply(["fixture failed"]); return }
            f.responder.set("broken.example", typeMX, .servfail)
            f.responder.set("tc.example", typeMX, .truncatedEmpty)
            var results: [String] = []
            f.resolver.resolveMX("nowhere.example") { r in
                if case .failure(let e) = r { results.append("\(e) permanent=\(e.isPermanent)") }
                f.resolver.resolveMX("broken.example") { r in
                    if case .failure(let e) = r { results.append("\(e) permanent=\(e.isPermanent)") }
                    // NXDOMAIN is cached, SERVFAIL is not.
                    f.resolver.resolveMX("nowhere.example") { _ in
                        results.append("nowhere queries: \(f.responder.count("nowhere.example/MX"))")
                        results.append("broken queries: \(f.responder.count("broken.example/MX"))")
                        f.resolver.resolveMX("tc.example") { r in
                            if case .failure(let e) = r { results.append("\(e) permanent=\(e.isPermanent)") }
                            reply(results)
                            f.close()
                        }
                    }
                }
            }
        }
        #expect(out == [
            "nowhere.example: no such domain (NXDOMAIN) permanent=true",
            "broken.example: DNS server failure (RCODE 2) permanent=false",
            "nowhere queries: 1",
            "broken queries: 3",
            "tc.example: truncated DNS answer permanent=false",
        ])
    }

    @Test(arguments: BackendKind.testable)
    func timeoutThenRetry(_ kind: BackendKind) throws { try retry(kind.loopType) }
    func retry<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let out: [String]? = h.await { loop, reply in
            // Timeouts must happen here (dropped queries), so they are short; what is
            // checked does not depend on how long anything took: a retry the load
            // caused on "slow" is counted on both sides (queries, timeouts).
            guard let f = try? ResolverFixture(loop: loop, timeout: 300_000_000, attempts: 3) else { reply(["fixture failed"]); return }
            f.responder.set("slow.example", typeMX, .records(answers: [TestRR(name: "slow.example", kind: .mx(5, "mx.slow.example"))],
                                                              additional: [TestRR(name: "mx.slow.example", kind: .a("127.0.0.7"))]))
            f.responder.dropFirst["slow.example/MX"] = 1
            f.responder.set("dead.example", typeMX, .drop)
            var results: [String] = []
            f.resolver.resolveMX("slow.example") { r in
                results.append(summary(r))
                let slowQueries = f.responder.count("slow.example/MX")
                // At least the dropped one and the answered one; more only if an answer
                // was late, and then each extra query is one more timeout.
                results.append(slowQueries >= 2 ? "slow queries: 2 or more" : "slow queries: \(slowQueries)")
                let slowTimeouts = f.resolver.statistics.timeouts
                results.append(slowTimeouts == slowQueries - 1 ? "slow timeouts: queries - 1"
                                                               : "slow timeouts: \(slowTimeouts) for \(slowQueries) queries")
                f.resolver.resolveMX("dead.example") { r in
                    if case .failure(let e) = r { results.append("\(e) permanent=\(e.isPermanent)") }
                    results.append("dead queries: \(f.responder.count("dead.example/MX"))")
                    results.append("dead timeouts: \(f.resolver.statistics.timeouts - slowTimeouts)")
                    reply(results)
                    f.close()
                }
            }
        }
        #expect(out == [
            "5 mx.slow.example [127.0.0.7]",
            "slow queries: 2 or more",
            "slow timeouts: queries - 1",
            "dead.example: DNS query timed out after 3 attempts permanent=false",
            "dead queries: 3",
            "dead timeouts: 3",
        ])
    }

    @Test(arguments: BackendKind.testable)
    func cacheHitSendsNoSecondPacket(_ kind: BackendKind) throws { try cache(kind.loopType) }
    func cache<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let out: [String]? = h.await { loop, reply in
            guard let f = try? ResolverFixture(loop: loop) else { reply(["fixture failed"]); return }
            f.responder.set("gmail.test", typeMX, .records(answers: [TestRR(name: "gmail.test", kind: .mx(5, "mx.gmail.test"))]))
            f.responder.set("mx.gmail.test", typeA, .records(answers: [TestRR(name: "mx.gmail.test", kind: .a("127.0.0.30"))]))
            f.responder.set("zero.test", typeMX, .records(answers: [TestRR(name: "zero.test", ttl: 0, kind: .mx(5, "mx.gmail.test"))]))
            var results: [String] = []
            // Two concurrent lookups share one query.
            var first: String? = nil
            f.resolver.resolveMX("gmail.test") { r in first = summary(r) }
            f.resolver.resolveMX("gmail.test") { r in
                results.append(first ?? "first not done")
                results.append(summary(r))
                let sent = f.responder.received.count
                var sync = false
                f.resolver.resolveMX("gmail.test") { r in
                    sync = true
                    results.append(summary(r))
                }
                results.append("answered from cache synchronously: \(sync)")
                results.append("packets after cached lookup: \(f.responder.received.count - sent)")
                // TTL 0 is not cached: asked again each time.
                f.resolver.resolveMX("zero.test") { _ in
                    f.resolver.resolveMX("zero.test") { _ in
                        results.append("zero.test queries: \(f.responder.count("zero.test/MX"))")
                        results.append("hits: \(f.resolver.statistics.cacheHits > 0)")
                        reply(results)
                        f.close()
                    }
                }
            }
        }
        #expect(out == [
            "5 mx.gmail.test [127.0.0.30]",
            "5 mx.gmail.test [127.0.0.30]",
            "5 mx.gmail.test [127.0.0.30]",
            "answered from cache synchronously: true",
            "packets after cached lookup: 0",
            "zero.test queries: 2",
            "hits: true",
        ])
    }

    @Test func unitHelpers() throws {
        #expect(DNSResolver<DispatchLoop>.normalize("Gmail.COM.") == "gmail.com")
        #expect(DNSResolver<DispatchLoop>.normalize("") == nil)
        #expect(DNSResolver<DispatchLoop>.normalize("a..b") == nil)
        #expect(DNSResolver<DispatchLoop>.normalize(String(repeating: "a", count: 64) + ".com") == nil)
        let dir = makeTempDir("dns")
        let path = dir + "/resolv.conf"
        try "# comment\nsearch example\nnameserver 10.0.0.1\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(DNSServers.fromResolvConf(path: path).map(\.description) == ["10.0.0.1:53", "[::1]:53", "[fe80::1]:53"])
        #expect(DNSServers.fromResolvConf(path: dir + "/missing").map(\.description) == ["127.0.0.1:53"])
        #expect(DNSResolutionError.timedOut(domain: "x", attempts: 3).isPermanent == false)
        #expect(DNSResolutionError.nxdomain(domain: "x").isPermanent)
    }

    @Test func cacheBoundsAndExpiry() {
        var c = DNSCache(maxEntries: 4, maxTTL: 100)
        let rec = DNSCacheValue.noData
        for i in 0..<10 {
            c.store(DNSCacheKey(name: "n\(i)", type: .a), rec, ttl: 1000, now: UInt64(i))
            #expect(c.count <= 4)
        }
        c.store(DNSCacheKey(name: "x", type: .mx), .nxdomain, ttl: 1000, now: 0)
        // Capped at maxTTL = 100 s.
        #expect(c.lookup(DNSCacheKey(name: "x", type: .mx), now: 99_000_000_000) != nil)
        #expect(c.lookup(DNSCacheKey(name: "x", type: .mx), now: 100_000_000_000) == nil)
    }
}

/// The test responder's use of the project's DNS codec.
enum TestDNSWire {
    static func typeName(_ t: UInt16) -> String {
        switch t { case 1: return "A"; case 5: return "CNAME"; case 15: return "MX"; case 28: return "AAAA"; default: return "TYPE\(t)" }
    }
    static func decodeQuery(_ bytes: UnsafeRawBufferPointer) -> (id: UInt16, name: String, type: UInt16)? {
        guard let m = try? DNSMessage(decoding: Array(bytes)), !m.isResponse, let q = m.questions.first else { return nil }
        return (m.id, q.name.lowercased(), q.type.rawValue)
    }

    static func encodeReply(id: UInt16, name: String, type: UInt16, _ reply: TestReply) -> [UInt8]? {
        let query = DNSMessage.query(id: id, name: name, type: DNSRecordType(rawValue: type))
        func rr(_ t: TestRR) -> DNSResourceRecord? {
            switch t.kind {
            case .mx(let p, let host): return DNSResourceRecord(name: t.name, ttl: t.ttl, data: .mx(preference: p, exchange: host))
            case .cname(let target): return DNSResourceRecord(name: t.name, ttl: t.ttl, data: .cname(target))
            case .a(let ip):
                let parts = ip.split(separator: ".").compactMap { UInt8($0) }
                return parts.count == 4 ? DNSResourceRecord(name: t.name, ttl: t.ttl, data: .a(parts)) : nil
            }
        }
        func soa(_ negativeTTL: UInt32) -> DNSResourceRecord {
            DNSResourceRecord(name: name, ttl: 3600, data: .soa(DNSStartOfAuthority(
                primaryServer: "ns.test", responsibleMailbox: "hostmaster.test", serial: 1,
                refresh: 3600, retry: 600, expire: 86400, minimum: negativeTTL)))
        }
        var m: DNSMessage
        switch reply {
        case .records(let answers, let additional):
            m = DNSMessage.response(to: query, answers: answers.compactMap(rr))
            m.additionals = additional.compactMap(rr)
        case .noData(let ttl):
            m = DNSMessage.response(to: query)
            m.authorities = [soa(ttl)]
        case .nxdomain(let ttl):
            m = DNSMessage.response(to: query, code: .nameError)
            m.authorities = [soa(ttl)]
        case .servfail:
            m = DNSMessage.response(to: query, code: .serverFailure)
        case .truncatedEmpty:
            m = DNSMessage.response(to: query)
            m.isTruncated = true
        case .drop:
            return nil
        }
        return try? m.encode()
    }
}
