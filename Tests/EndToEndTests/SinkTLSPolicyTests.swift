import Testing
@testable import PeregrineSink

/// The sink's `require-tls` and `starttls` profile settings.
@Suite struct SinkTLSPolicyTests {
    @Test func requireTLSAnswersLikeGmailUntilTLS() throws {
        let set = try SinkProfileParser.parse("""
            <isp gmail>
                domains gmail.com
                mx 127.0.0.1
                reply-suffix gsmtp
                require-tls
                starttls refuse
            </isp>
            <isp other>
                domains other.test
                mx 127.0.0.2
                require-tls "530 5.7.0 Must issue a STARTTLS command first"
            </isp>
            """, file: "p.conf")
        #expect(set.profiles[0].startTLS == .refuse)
        #expect(set.profiles[1].startTLS == .offer)
        let policy = SinkPolicy(profiles: set.profiles)
        let (c, greeting) = policy.connect(provider: policy.providers[0], ip: "127.0.0.9", now: 0)
        #expect(greeting == .accept)
        let refused = try #require(policy.mailFrom(c, sender: "a@b.test", now: 0).reply)
        #expect(refused.code == 421 && refused.enhanced == "4.7.29" && refused.close)
        #expect(refused.lines == ["Your email has been rate limited because you're not using a TLS connection.", "gsmtp"])
        #expect(policy.providers[0].totals.messagesDeferred[.tlsRequired] == 1)
        policy.tlsHandshake(c, ok: true)
        #expect(policy.mailFrom(c, sender: "a@b.test", now: 0) == .accept)
        #expect(policy.providers[0].totals.sessionsTLS == 1)
        let (o, _) = policy.connect(provider: policy.providers[1], ip: "127.0.0.9", now: 0)
        #expect(policy.mailFrom(o, sender: "a@b.test", now: 0).reply?.code == 530)
    }

    @Test func badSettingsNameTheLine() {
        func error(_ line: String) -> String? {
            do { _ = try SinkProfileParser.parse("<isp x>\n domains x.test\n \(line)\n</isp>", file: "p.conf"); return nil }
            catch { return error.description }
        }
        #expect(error("starttls sometimes") == "p.conf:3: starttls: 'sometimes' is not offer, refuse or break")
        #expect(error("require-tls yes") == nil)
        #expect(error("require-tls a b") == "p.conf:3: require-tls takes yes|no or one quoted reply")
    }

    @Test func tlsOptionsGoTogether() {
        if case .success = SinkOptions.parse(["--accept-all", "--listen", "127.0.0.1:25", "--tls-cert", "c.pem"]) {
            Issue.record("--tls-cert without --tls-key was accepted")
        }
        guard case .success(let o) = SinkOptions.parse(["--accept-all", "--listen", "127.0.0.1:25", "--tls-cert", "c.pem",
                                                        "--tls-key", "k.pem"]) else { Issue.record("rejected"); return }
        #expect(o.tlsCert == "c.pem" && o.tlsKey == "k.pem")
    }
}
