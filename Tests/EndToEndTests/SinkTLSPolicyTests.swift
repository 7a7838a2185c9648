import Testing
@testable import PeregrineSink

/// The sink's `require-tls` and `starttls` profile settings.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkTLSPolicyTests {
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
        // Folded Gmail-style, the reply-suffix at the end of the last line.
        #expect(refused.lines.joined(separator: " ") == "Your email has been rate limited because you're not using a TLS connection. gsmtp")
        #expect(refused.lines.count == 2 && refused.lines.allSatisfy { $0.count <= SinkPolicy.foldWidth })
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

    @Test func requireTLSWithoutACertificateIsRefusedWithItsLine() throws {
        let set = try SinkProfileParser.parse("""
            <isp plain>
                domains plain.test
            </isp>
            <isp gmail>
                domains gmail.com
                require-tls
            </isp>
            """, file: "p.conf")
        do {
            _ = try set.served(hasCertificate: false, noRequireTLS: false)
            Issue.record("a require-tls profile was served without a certificate")
        } catch {
            #expect(error.description.hasPrefix("p.conf:6: <isp gmail> says require-tls, but the sink has no certificate"), "\(error)")
            #expect(error.description.contains("--tls-cert FILE --tls-key FILE") && error.description.contains("--no-require-tls"))
        }
        #expect(try set.served(hasCertificate: true, noRequireTLS: false).profiles[1].requireTLS?.enhanced == "4.7.29")
        // --no-require-tls: plain text for everyone, with or without a certificate.
        #expect(try set.served(hasCertificate: false, noRequireTLS: true).profiles.allSatisfy { $0.requireTLS == nil })
        #expect(try set.served(hasCertificate: true, noRequireTLS: true).profiles.allSatisfy { $0.requireTLS == nil })
        // `require-tls no` is no requirement.
        let off = try SinkProfileParser.parse("<isp g>\n domains g.test\n require-tls no\n</isp>", file: "q.conf")
        #expect(off.profiles[0].requireTLSLocation == nil)
        #expect(try off.served(hasCertificate: false, noRequireTLS: false).profiles[0].requireTLS == nil)
    }

    @Test func noRequireTLSIsAFlag() {
        guard case .success(let o) = SinkOptions.parse(["--profile", "g.conf", "--no-require-tls"]) else { Issue.record("rejected"); return }
        #expect(o.noRequireTLS)
        if case .success = SinkOptions.parse(["--profile", "g.conf", "--no-require-tls=yes"]) {
            Issue.record("--no-require-tls=yes was accepted")
        }
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
