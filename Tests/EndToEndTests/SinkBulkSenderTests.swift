#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineDKIM
import PeregrineTestSupport
@testable import PeregrineSink

/// The sink enforces the 2024 bulk-sender rules (issue 15): `require-dkim`,
/// `require-dmarc-alignment`, `require-list-unsubscribe`, verified with
/// PeregrineDKIM against the keys given with `--dkim-key`, answered with the
/// providers' texts at the end of DATA. (That verifier agrees with dkimpy on
/// a signed and tampered corpus: DKIMSignatureTests.verifierAgreesWithDkimpy.)
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkBulkSenderTests {
    static func sign(_ message: [UInt8], keyPath: String, selector: String, domain: String) throws -> [UInt8] {
        let identity = DKIMSigningIdentity(domain: domain, selector: selector, key: try DKIMPrivateKey.load(path: keyPath))
        var out: [UInt8] = []
        try message.withUnsafeBytes { try DKIMSigner().sign(message: $0, identities: [identity], now: Int64(time(nil)), into: &out) }
        return out + message
    }

    static func send(_ client: SinkTestClient, _ message: [UInt8]) throws -> WireReply? {
        guard try client.command("MAIL FROM:<bounce@example.com>")?.code == 250,
              try client.command("RCPT TO:<user@gmail.test>")?.code == 250,
              try client.command("DATA")?.code == 354 else { throw SinkTestError("sink refused the envelope") }
        var wire = ""
        for line in String(decoding: message, as: UTF8.self).components(separatedBy: "\r\n").dropLast() {
            wire += (line.hasPrefix(".") ? "." : "") + line + "\r\n"
        }
        try client.send(wire + ".\r\n")
        return try client.reply()
    }

    @Test func gmailRulesAnswerWithGmailsTexts() throws {
        let dir = try TestDirectory("bulk-sender")
        let ip = PrivateLoopback.address(121, 1)
        let rsa = try DKIMExternalVerifiers.makeKey(.rsa2048, name: "rsa", in: dir.path)
        let esp = try DKIMExternalVerifiers.makeKey(.ed25519, name: "esp", in: dir.path)
        let path = try dir.write("gmail.conf", "time-scale 1\n\n" + sinkProfile("gmail", domains: "gmail.test", mx: [ip], """
                require-dkim yes
                require-dmarc-alignment yes
                require-list-unsubscribe "550-5.7.26 one-click unsubscribe missing"
            """))
        let sink = try SinkProcess(["--profile", path, "--port", "0", "--stats-port", "\(ip):0", "--backend", "epoll",
                                    "--dkim-key", "example.com:rsa:\(rsa.publicKeyPath)",
                                    "--dkim-key", "esp.test:esp:\(esp.publicKeyPath)"])
        let (host, port) = try sink.address("gmail")
        let client = try SinkTestClient(host, port)
        guard try client.start()?.code == 220 else { throw SinkTestError("no greeting") }
        let corpus = DKIMTestCorpus.messages(fromDomain: "example.com")
        let plain = corpus[0].bytes, noUnsubscribe = corpus[2].bytes

        // Aligned signature covering the RFC 8058 fields: accepted.
        let good = try Self.sign(plain, keyPath: rsa.privateKeyPath, selector: "rsa", domain: "example.com")
        #expect(try Self.send(client, good)?.code == 250)

        // Unsigned, and signed then tampered: Gmail's unauthenticated text.
        for message in [plain, DKIMTestCorpus.tamperedBody(good)] {
            let r = try Self.send(client, message)
            #expect(r?.code == 550 && r?.text.contains("5.7.26 This mail is unauthenticated") == true, "\(String(describing: r))")
            #expect(r?.text.contains("SPF check for [example.com] did not pass with ip: [") == true, "\(String(describing: r))")
        }

        // Signed only by the ESP's domain: verifies, but not aligned with From.
        let espOnly = try Self.sign(plain, keyPath: esp.privateKeyPath, selector: "esp", domain: "esp.test")
        let dmarc = try Self.send(client, espOnly)
        #expect(dmarc?.code == 550 && dmarc?.text.contains("Unauthenticated email from example.com is not accepted due to domain's DMARC policy") == true,
                "\(String(describing: dmarc))")

        // Aligned but without List-Unsubscribe: the profile's reply.
        let noLU = try Self.sign(noUnsubscribe, keyPath: rsa.privateKeyPath, selector: "rsa", domain: "example.com")
        let lu = try Self.send(client, noLU)
        #expect(lu?.code == 550 && lu?.text.contains("one-click unsubscribe missing") == true, "\(String(describing: lu))")

        let stats = try sink.providerStats("gmail")
        let text = "\(stats)"
        #expect(text.contains("require-dkim") && text.contains("require-dmarc-alignment") && text.contains("require-list-unsubscribe"), "\(text)")
        _ = try? client.command("QUIT")
    }

    /// The shipped profiles turn the rules on with the providers' texts.
    @Test func gmailAndYahooProfilesEnforceTheRules() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["gmail", "yahoo"] {
            let set = try SinkProfileParser.load(paths: [root.appendingPathComponent("sink/profiles/\(name).conf").path])
            let rules = try #require(set.profiles.first?.bulkSender)
            #expect(rules.requireDKIM != nil && rules.requireDMARCAlignment != nil && rules.requireListUnsubscribe != nil)
            if name == "yahoo" {
                #expect(rules.requireDKIM?.code == 554 && rules.requireDKIM?.enhanced == "5.7.9")
            } else {
                #expect(rules.requireDKIM == SinkBulkSenderRules.gmailUnauthenticated)
            }
        }
    }
}
