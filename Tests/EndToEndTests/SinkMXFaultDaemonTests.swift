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
@Suite struct SinkMXFaultDaemonTests {
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
}
