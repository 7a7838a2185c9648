#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
@testable import PeregrineSink

/// MX rollup end to end: four domains whose MX (answered by a DNS sink) is
/// one receiver allowing 3 connections per source IP. Scenarios 40 and 41
/// (127.P.40.x, 127.P.41.x); the receiver listens on its address's port 25.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonSiteTests {
    typealias Scenario = DaemonEndToEndTests.Scenario
    static let domains = ["hot.test", "out.test", "live.test", "msn.test"]

    /// Starts the DNS sink (MX for the four domains → `mx`) and the receiver
    /// on `mx`:25 that refuses a fourth concurrent connection from one IP.
    /// Sessions wait 150 ms at the banner so that connections overlap.
    static func startSinks(_ s: Scenario, mx: String) throws -> (dns: SinkProcess, dnsPort: UInt16) {
        let dnsSink = try startSink(s.dir, serviceIP: s.listenIP,
                                    sinkProfile("zone", domains: domains.joined(separator: " "), mx: [mx]), dns: true, tag: "dns")
        s.sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("olc", domains: domains.joined(separator: " "), mx: [mx], """
                max-connections 3 greeting "451 4.7.652 The mail server [{ip}] has exceeded the maximum number of connections. (S3115)"
                latency banner fixed 150ms
                latency data fixed 20ms
            """), port: 25)
        return (dnsSink, try #require(dnsSink.dnsPort))
    }

    static func config(_ s: Scenario, dnsPort: UInt16, rollup: Bool) -> String {
        daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            domain-macro olc \(domains.joined(separator: ","))
            <domain $olc>
                max-smtp-out 3
                max-rcpt-per-transaction 1
                retry-after 1s
                connect-timeout 5s
                mx-rollup \(rollup ? "yes" : "no")
            </domain>
            """)
    }

    /// Each message has recipients in all four domains, so the four queues
    /// have work at the same moment.
    static func inject(_ d: DaemonProcess, messages: Int, perDomain: Int) throws -> Int {
        let c = try d.client()
        var n = 0
        for m in 0..<messages {
            let rcpts = domains.flatMap { dom in (0..<perDomain).map { "r\(m)-\($0)@\(dom)" } }
            #expect(try c.send(to: rcpts, id: "site-\(m)") == nil)
            n += rcpts.count
        }
        c.quit()
        return n
    }

    /// Rollup on: the four queues share one budget of 3 connections, so the
    /// receiver never sees more than 3 at once from the VMTA's address and
    /// never has to refuse one; every domain is delivered; /queues still
    /// lists the four queues, each naming the same site.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"), arguments: BackendKind.testable)
    func rolledUpDomainsShareTheSiteConnectionBudget(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("site-on", 40, kind)
        let mx = E2E.ip(40, kind, host: 1)
        let (dnsSink, dnsPort) = try Self.startSinks(s, mx: mx)
        defer { dnsSink.terminate() }
        let d = try s.startDaemon(Self.config(s, dnsPort: dnsPort, rollup: true))
        let expected = try Self.inject(d, messages: 3, perDomain: 8)
        #expect(s.waitForFinals(expected, timeout: 60), "\(s.diagnostics)")
        let finals = s.records.finals
        #expect(finals.count == expected)
        #expect(finals.allSatisfy { $0.type == .delivered }, "\(finals.filter { $0.type != .delivered }.map(\.dsnDiag))")
        for dom in Self.domains {
            #expect(finals.filter { $0.rcpt.hasSuffix("@" + dom) }.count == expected / Self.domains.count, "\(dom)")
        }
        let ip = try #require(s.sink).ipStats("olc", "127.0.0.10")
        let peak = ip["peak_concurrent_connections"] as? Int ?? -1
        #expect(peak >= 1 && peak <= 3, "peak \(peak)")
        #expect((ip["sessions_refused"] as? [String: Any] ?? [:]).isEmpty, "\(ip)")
        #expect(ip["messages_accepted"] as? Int == expected)

        let queues = try d.queues()
        let sites = Self.domains.map { queues[queueName($0)]?["site"] as? String ?? "" }
        #expect(Set(sites).count == 1 && !sites[0].isEmpty, "\(sites)")
        #expect(sites[0].contains("mx1.zone.sink:25") && sites[0].hasSuffix("/vmta1"), "\(sites[0])")
    }

    /// Rollup off (the default behaviour): four queues of 3 connections each
    /// against the same receiver, which refuses the excess at the greeting;
    /// the queues have no site, and everything is still delivered on retry.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"), arguments: BackendKind.testable)
    func withoutRollupEachDomainHasItsOwnBudget(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("site-off", 41, kind)
        let mx = E2E.ip(41, kind, host: 1)
        let (dnsSink, dnsPort) = try Self.startSinks(s, mx: mx)
        defer { dnsSink.terminate() }
        let d = try s.startDaemon(Self.config(s, dnsPort: dnsPort, rollup: false))
        let expected = try Self.inject(d, messages: 3, perDomain: 8)
        #expect(s.waitForFinals(expected, timeout: 60), "\(s.diagnostics)")
        let finals = s.records.finals
        #expect(finals.count == expected && finals.allSatisfy { $0.type == .delivered })
        let ip = try #require(s.sink).ipStats("olc", "127.0.0.10")
        #expect(!(ip["sessions_refused"] as? [String: Any] ?? [:]).isEmpty, "\(ip)")
        let queues = try d.queues()
        #expect(Self.domains.allSatisfy { (queues[queueName($0)]?["site"] as? String) == "" }, "\(queues)")
    }
}
