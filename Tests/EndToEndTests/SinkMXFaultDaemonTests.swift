#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
@testable import PeregrineSink

/// One MX host of a provider black-holed (`--mx-fault`, issue 19) while the
/// daemon delivers: the TCP handshake to it succeeds and no greeting ever
/// comes. Scenario 44 (127.P.44.x); the sink listens on port 25 of both MX
/// addresses and answers the DNS, so the daemon finds both hosts as it would
/// find a real provider's.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkMXFaultDaemonTests {
    typealias Scenario = DaemonEndToEndTests.Scenario

    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"),
          .timeLimit(.minutes(10)), arguments: BackendKind.testable)
    func aBlackHoledPrimaryMXIsPassedOverForTheOther(_ kind: BackendKind) throws {
        let s = try Scenario("mx-blackhole", 44, kind)
        let primary = E2E.ip(44, kind, host: 1), secondary = E2E.ip(44, kind, host: 2)
        let profile = try s.dir.write("bh.conf", "time-scale 1\n\n" + sinkProfile("bh", domains: "bh.test", mx: [primary, secondary]))
        let sink = try SinkProcess(["--profile", profile, "--port", "25", "--stats-port", "\(s.listenIP):0",
                                    "--dns", "\(s.listenIP):0", "--backend", "epoll", "--mx-fault", "bh:1=blackhole"])
        s.sink = sink
        let dnsPort = try #require(sink.dnsPort)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            <domain bh.test>
                smtp-greeting-timeout 2s
                connect-timeout 5s
                retry-after 1s
            </domain>
            """))
        let c = try d.client()
        for m in 0..<3 { #expect(try c.send(to: ["m\(m)@bh.test"], id: "bh-\(m)") == nil) }
        c.quit()
        // The daemon tries the black-holed host (highest preference), and the sink never speaks to it.
        #expect(E2E.waitUntil(20, every: 0.2) {
            ((try? sink.providerStats("bh"))?["sessions_blackholed"] as? Int ?? 0) >= 1
        }, "the daemon never connected to the black-holed MX")
        // A greeting timeout backs the black-holed host off (issue 12, item 2):
        // the next connection goes to the second MX, and the queue's accounting
        // names the failed host and the timeout (a tq record; no message is
        // deferred, since another MX took the mail).
        #expect(s.waitForFinals(3, timeout: 30), "\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        #expect(delivered.count == 3)
        #expect(delivered.allSatisfy { $0.dlvDestinationIp == secondary }, "\(delivered.map(\.dlvDestinationIp))")
        let accepted = (try? sink.providerStats("bh"))?["messages_accepted"] as? Int
        #expect(accepted == 3)
        let tq = s.records.of(.transientQueue)
        #expect(tq.contains { $0.dsnDiag.contains(primary) && $0.dsnDiag.contains("timeout waiting for the greeting") },
                "no tq record names the black-holed host and the greeting timeout: \(tq.map(\.dsnDiag))")
        #expect(s.records.of(.transient).isEmpty, "\(s.records.of(.transient).map(\.dsnDiag))")
    }

    /// `--mx-fault …=down`: the primary refuses connections (its listener is
    /// gone); the daemon delivers everything through the secondary and its
    /// queue accounting names the refused host. Scenario 110.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"),
          .timeLimit(.minutes(10)), arguments: BackendKind.testable)
    func aDownPrimaryMXIsPassedOverForTheOther(_ kind: BackendKind) throws {
        let s = try Scenario("mx-down", 110, kind)
        let primary = E2E.ip(110, kind, host: 1), secondary = E2E.ip(110, kind, host: 2)
        let profile = try s.dir.write("down.conf", "time-scale 1\n\n" + sinkProfile("down", domains: "down.test", mx: [primary, secondary]))
        let sink = try SinkProcess(["--profile", profile, "--port", "25", "--stats-port", "\(s.listenIP):0",
                                    "--dns", "\(s.listenIP):0", "--backend", "epoll", "--mx-fault", "down:1=down"])
        s.sink = sink
        let dnsPort = try #require(sink.dnsPort)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            <domain down.test>
                connect-timeout 5s
                retry-after 1s
            </domain>
            """))
        let c = try d.client()
        for m in 0..<3 { #expect(try c.send(to: ["m\(m)@down.test"], id: "down-\(m)") == nil) }
        c.quit()
        #expect(s.waitForFinals(3, timeout: 30), "\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        #expect(delivered.count == 3)
        #expect(delivered.allSatisfy { $0.dlvDestinationIp == secondary }, "\(delivered.map(\.dlvDestinationIp))")
        #expect((try? sink.providerStats("down"))?["messages_accepted"] as? Int == 3)
        let queueRecords = s.records.of(.transientQueue) + s.records.of(.transient)
        #expect(queueRecords.contains { $0.dsnDiag.contains(primary) }, "no t/tq record names the refused host: \(queueRecords.map(\.dsnDiag))")
        #expect(s.records.of(.bounced).isEmpty, "\(s.records.of(.bounced).map(\.dsnDiag))")
    }

    /// `--dns-fault`: SERVFAIL for a domain defers its mail (a t/tq record
    /// says why, nothing bounces), NXDOMAIN bounces it (bounce-upon-no-mx), SERVFAIL for one MX
    /// host's address leaves the other host to deliver to, and mail to a
    /// healthy domain goes out meanwhile. Scenario 111.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"),
          .timeLimit(.minutes(10)), arguments: BackendKind.testable)
    func dnsFailuresDeferBounceOrFallBackToTheOtherHost(_ kind: BackendKind) throws {
        let s = try Scenario("dns-fault", 111, kind)
        let mx1 = E2E.ip(111, kind, host: 1), mx2 = E2E.ip(111, kind, host: 2)
        let profile = try s.dir.write("dnsf.conf", "time-scale 1\n\n"
            + sinkProfile("dnsf", domains: "ok.test servfail.test nx.test", mx: [mx1, mx2]))
        let sink = try SinkProcess(["--profile", profile, "--port", "25", "--stats-port", "\(s.listenIP):0",
                                    "--dns", "\(s.listenIP):0", "--backend", "epoll",
                                    "--dns-fault", "servfail.test=servfail", "--dns-fault", "nx.test=nxdomain",
                                    "--dns-fault", "mx1.dnsf.sink=servfail"])
        s.sink = sink
        let dnsPort = try #require(sink.dnsPort)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            <domain *>
                retry-after 1s
                bounce-after 1h
                # PowerMTA's switch: a permanent "no such domain" bounces at once
                # (without it NXDOMAIN is retried); SERVFAIL stays temporary either way.
                bounce-upon-no-mx yes
                # No DSN back to the sender: its domain is not in the sink's DNS either.
                deliver-local-dsn no
            </domain>
            """))
        let c = try d.client()
        #expect(try c.send(to: ["a@ok.test"], id: "dns-ok") == nil)
        #expect(try c.send(to: ["b@nx.test"], id: "dns-nx") == nil)
        #expect(try c.send(to: ["c@servfail.test"], id: "dns-servfail") == nil)
        c.quit()
        // ok.test and nx.test settle; servfail.test is retried, never settled.
        #expect(s.waitForFinals(2, timeout: 30), "\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        #expect(delivered.map(\.rcpt) == ["a@ok.test"], "\(s.diagnostics)")
        // mx1.dnsf.sink has no address (SERVFAIL): the daemon used mx2.
        #expect(delivered.allSatisfy { $0.dlvDestinationIp == mx2 }, "\(delivered.map(\.dlvDestinationIp))")
        let bounced = s.records.of(.bounced)
        #expect(bounced.map(\.rcpt) == ["b@nx.test"], "\(s.diagnostics)")
        #expect(bounced.allSatisfy { $0.dsnDiag.contains("NXDOMAIN") }, "\(bounced.map(\.dsnDiag))")
        #expect(E2E.waitUntil(30, every: 0.2) {
            (s.records.of(.transient) + s.records.of(.transientQueue)).contains {
                $0.dsnDiag.contains("servfail.test") && $0.dsnDiag.contains("server failure")
            }
        }, "no t/tq record for the SERVFAIL domain:\n\(s.diagnostics)")
        #expect(!s.records.contains { $0.rcpt == "c@servfail.test" && ($0.type == .delivered || $0.type == .bounced) },
                "\(s.diagnostics)")
    }
}
