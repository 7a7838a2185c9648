#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineAccounting
import PeregrineIO

/// Relay rights (issue 12, item 3), per backend: a `<source>`'s rights are
/// looked up at each MAIL against the running config, so a reload that
/// revokes always-allow-relaying refuses the next transaction of a
/// connection opened before it; and a daemon started without smtp-listener
/// says what it will listen on.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonRelayRightsTests {
    @Test(arguments: BackendKind.testable)
    func aReloadRevokingRelayingAppliesToOpenConnections(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("relay-reload", 89, kind)
        let ip = E2E.ip(89, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("relay", domains: "relay.test", mx: [ip]))
        s.sink = sink
        let (_, port) = try sink.address("relay")
        let domain = """
            <domain relay.test>
                route [\(ip)]:\(port)
            </domain>
            """
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, domain))
        let c = try d.client()
        #expect(try c.send(to: ["before@relay.test"], id: "relay-before") == nil)

        // The same file with relaying revoked for 127.0.0.0/8.
        let revoked = daemonConfig(s.dir, listen: s.listenIP, domain)
            .replacingOccurrences(of: "always-allow-relaying yes", with: "always-allow-relaying no")
        _ = try s.dir.write("peregrine.conf", revoked)
        #expect((try d.ctl(["reload"])["reloaded"] as? Bool) == true)

        // Same connection, next transaction: refused.
        let mail = try #require(try c.client.command("MAIL FROM:<sender@peregrine.test>"))
        #expect(mail.code == 250)
        let rcpt = try #require(try c.client.command("RCPT TO:<after@relay.test>"))
        #expect(rcpt.code == 550 && rcpt.text.contains("5.7.1"), "\(rcpt)")
        _ = try c.client.command("RSET")
        c.quit()
        // A new connection is refused the same way.
        let c2 = try d.client()
        #expect(try c2.send(to: ["new@relay.test"], id: "relay-new") == "RCPT new@relay.test refused")
        c2.quit()
        #expect(s.waitForFinals(1), "\(s.diagnostics)")
        #expect(s.records.finals.map(\.rcpt) == ["before@relay.test"])
    }

    /// check-config and the start both say where a config without
    /// smtp-listener listens. The start is made to fail before it binds (its
    /// spool cannot be created), so the test never opens port 25 on every address.
    @Test func noListenerIsWarnedAtCheckConfigAndStart() throws {
        let dir = try TestDirectory("no-listener")
        let blocker = try dir.write("not-a-directory", "")
        let path = try dir.write("peregrine.conf", "spool \(blocker)/spool\n")
        let check = E2E.run(E2E.executable("peregrine"), ["check-config", path], timeout: 30)
        #expect(check.status == 0, "\(check)")
        #expect(check.stderr.contains("\(path): warning: no smtp-listener: the daemon will listen on 0.0.0.0:25"), "\(check)")
        #expect(check.stdout.contains("OK (listening on 0.0.0.0:25,"), "\(check)")
        let run = E2E.run(E2E.executable("peregrine"), ["run", "--config", path, "--backend", "epoll", "--threads", "1"], timeout: 30)
        #expect(run.status == 1, "\(run)")
        #expect(run.stderr.contains("peregrine: warning: no smtp-listener: the daemon will listen on 0.0.0.0:25"), "\(run)")
        #expect(run.stderr.contains("cannot create spool directory"), "\(run)")
    }
}
