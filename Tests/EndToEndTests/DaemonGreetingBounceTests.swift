#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// `bounce-upon-5xx-greeting` (PowerMTA's): a receiver that greets with 554
/// gets the waiting mail bounced with its reply when the domain says so, and
/// only deferred (a failed host: next MX, then retry) when it does not.
/// Scenario 174: 127.P.174.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonGreetingBounceTests {
    @Test(arguments: BackendKind.testable)
    func a5xxGreetingBouncesOnlyWhereConfigured(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("greeting-bounce", 174, kind)
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(174, kind, host: 1), mode: .greet554)
        defer { receiver.terminate() }
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain bounce.test>
                route [\(receiver.ip)]:\(receiver.port)
                bounce-upon-5xx-greeting yes
            </domain>
            <domain defer.test>
                route [\(receiver.ip)]:\(receiver.port)
                retry-after 1h
            </domain>
            """))
        let c = try d.client()
        #expect(try c.send(to: ["b1@bounce.test", "b2@bounce.test"], id: "bounce") == nil)
        #expect(try c.send(to: ["d1@defer.test"], id: "defer") == nil)
        c.quit()
        #expect(E2E.waitUntil(60, every: 0.1) {
            let r = s.records
            return r.of(.bounced).count >= 2 && r.of(.transient).contains { $0.rcpt == "d1@defer.test" }
        }, "\(s.diagnostics)")
        let records = s.records
        let bounced = records.of(.bounced)
        #expect(Set(bounced.map(\.rcpt)) == ["b1@bounce.test", "b2@bounce.test"], "\(s.diagnostics)")
        for b in bounced {
            #expect(b.dsnStatus.hasPrefix("5.7.1 ") && b.bounceCat == "policy-related" && b.dsnDiag.contains("no service for you"), "status \(b.dsnStatus) diag \(b.dsnDiag) cat \(b.bounceCat)")
        }
        #expect(!records.of(.transient).contains { $0.rcpt.hasSuffix("@bounce.test") }, "\(s.diagnostics)")
        #expect(!bounced.contains { $0.rcpt == "d1@defer.test" }, "\(s.diagnostics)")
    }
}
