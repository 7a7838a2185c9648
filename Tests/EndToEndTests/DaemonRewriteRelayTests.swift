#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// `<rewrite-list>` `rcpt-to` and relay rights (issue 12, hardening 3a): a
/// client without relay rights is judged on the address its mail will go
/// to, after its source's rewriting. A relay-domain recipient rewritten to
/// an outside domain is refused (before, the check saw the address as sent
/// and the rewrite relayed it out: an open relay through a rewrite rule),
/// and a recipient the rewrite moves into a relay domain is accepted and
/// delivered there. Per backend; scenario 71.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO) struct DaemonRewriteRelayTests {
    @Test(arguments: BackendKind.testable)
    func theRelayCheckSeesTheRewrittenRecipient(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("rewrite-relay", 71, kind)
        let receiver = try RecordingReceiver(s.dir, ip: E2E.ip(71, kind, host: 5))
        defer { receiver.terminate() }
        let config = daemonConfig(s.dir, listen: s.listenIP, """
            relay-domain relay.test
            <rewrite-list moves>
                rcpt-to away@relay.test someone@outside.test
                rcpt-to *@old-relay.test *@relay.test
            </rewrite-list>
            <domain relay.test>
                route [\(receiver.ip)]:\(receiver.port)
            </domain>
            """)
            .replacingOccurrences(of: "always-allow-relaying yes", with: "always-allow-relaying no")
            .replacingOccurrences(of: "    default-virtual-mta vmta1\n", with: "    default-virtual-mta vmta1\n    rewrite-list moves\n")
        #expect(config.contains("rewrite-list moves\n") && config.contains("always-allow-relaying no"))
        let d = try s.startDaemon(config)
        let c = try d.client()
        let mail = try #require(try c.client.command("MAIL FROM:<sender@peregrine.test>"))
        #expect(mail.code == 250, "\(mail)")
        // A relay-domain address that the rewrite sends outside: refused, saying why.
        let away = try #require(try c.client.command("RCPT TO:<away@relay.test>"))
        #expect(away.code == 550 && away.text.contains("5.7.1")
                && away.text.contains("away@relay.test is rewritten to someone@outside.test"), "\(away)")
        // Not a relay domain as sent, moved into one by the rewrite: accepted.
        let moved = try #require(try c.client.command("RCPT TO:<moved@old-relay.test>"))
        #expect(moved.code == 250, "\(moved)")
        // Untouched by the rewrite: the plain relay-domain check.
        let plain = try #require(try c.client.command("RCPT TO:<plain@relay.test>"))
        #expect(plain.code == 250, "\(plain)")
        let outside = try #require(try c.client.command("RCPT TO:<other@outside.test>"))
        #expect(outside.code == 550 && !outside.text.contains("rewritten"), "\(outside)")
        let data = try #require(try c.client.command("DATA"))
        #expect(data.code == 354, "\(data)")
        try c.client.send("From: <sender@peregrine.test>\r\nSubject: rewrite relay\r\n\r\nbody\r\n.\r\n")
        let done = try #require(try c.client.reply())
        #expect(done.code == 250, "\(done)")
        c.quit()
        #expect(E2E.waitUntil(30) { receiver.messages.count == 1 }, "\(s.diagnostics)")
        let m = try #require(receiver.messages.first)
        #expect(Set(m.rcpts) == ["moved@relay.test", "plain@relay.test"], "\(m.rcpts)")
    }
}
