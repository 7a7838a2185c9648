import Foundation
import Testing
@testable import PeregrineDKIM
@testable import PeregrineDaemon
import PeregrineConfig
import PeregrineTestSupport

/// `dkim-identity` and `dkim-identity-fallback` (PowerMTA's third-party
/// signing): which keys sign a message and the `i=` they carry, judged by
/// dkimpy and opendkim-testmsg (which check that `i=` lies under `d=`).
@Suite(.blockingIO) struct DKIMIdentityTests {
    // A Date field: opendkim-testmsg calls a message without one a syntax error (RFC 5322 requires it).
    static let message = Array(("From: News <news@customer.example>\r\nTo: a@b.example\r\nSubject: hi\r\n"
                                + "Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@customer.example>\r\n\r\nHello\r\n").utf8)

    static func config(_ scope: String, keys: DKIMTestKeys.Set) throws -> PeregrineConfig {
        try PeregrineConfig.parse("""
            smtp-listener 127.0.0.1:2525
            <source 127.0.0.0/8>
                always-allow-relaying yes
                domain-key rsa,esp.example,\(keys.rsa.privateKeyPath)
                domain-key ed,customer2.example,\(keys.ed25519.privateKeyPath)
            \(scope)
            </source>
            <virtual-mta vmta1>
                smtp-source-host 127.0.0.10 vmta1.test
            </virtual-mta>

            """, file: "t.conf")
    }

    /// The DKIM-Signature fields and the signed message, as injection makes them.
    static func sign(_ config: PeregrineConfig, _ message: [UInt8] = message) -> (fields: String, signed: [UInt8])? {
        let signer = InjectionDKIMSigner()
        let outcome = message.withUnsafeBytes {
            signer.sign($0, config: config, source: config.sources[0], vmta: "vmta1", recipientDomain: "b.example", now: 1_796_472_000)
        }
        guard case .signed = outcome else { return nil }
        return (String(decoding: signer.header, as: UTF8.self), signer.header + message)
    }

    static func records(_ keys: DKIMTestKeys.Set) -> [String: String] {
        ["rsa._domainkey.esp.example": keys.rsa.record, "ed._domainkey.customer2.example": keys.ed25519.record]
    }

    @Test func aNamedIdentitySignsWithItsDomainsKeyAndItsAgentIdentifier() throws {
        let keys = try DKIMTestKeys.get()
        // The From domain (customer.example) has no key: by default nothing signs.
        #expect(Self.sign(try Self.config("", keys: keys)) == nil)
        let named = try #require(Self.sign(try Self.config("    dkim-identity bounces@mail.esp.example", keys: keys)))
        #expect(named.fields.contains("d=esp.example;"), "\(named.fields)")
        #expect(named.fields.contains("i=bounces@mail.esp.example;"), "\(named.fields)")
        let domainOnly = try #require(Self.sign(try Self.config("    dkim-identity esp.example", keys: keys)))
        #expect(domainOnly.fields.contains("i=@esp.example;"), "\(domainOnly.fields)")
        // The same signature with i= moved outside d= must fail: the verifiers check i=.
        let outside = Array(String(decoding: named.signed, as: UTF8.self)
            .replacingOccurrences(of: "i=bounces@mail.esp.example;", with: "i=bounces@other.example;").utf8)
        let dir = try DKIMTestKeys.scratch("identity")
        let messages = [named.signed, domainOnly.signed, outside]
        #expect(try DKIMExternalVerifiers.dkimpy(messages, records: Self.records(keys), directory: dir) == [true, true, false])
        let od = try DKIMExternalVerifiers.opendkim(messages, records: Self.records(keys), directory: dir)
        #expect(od.map(\.pass) == [true, true, false], "\(od.map(\.output))")
    }

    @Test func theFallbackSignsOnlyWhenTheFromDomainHasNoKey() throws {
        let keys = try DKIMTestKeys.get()
        let config = try Self.config("    dkim-identity-fallback @esp.example\n    dkim-required yes", keys: keys)
        let fallback = try #require(Self.sign(config), "dkim-required refused though the fallback has a key")
        #expect(fallback.fields.contains("d=esp.example;") && fallback.fields.contains("i=@esp.example;"), "\(fallback.fields)")
        // A From domain with its own key signs with it, without the fallback and without i=.
        let own = Array(String(decoding: Self.message, as: UTF8.self)
            .replacingOccurrences(of: "news@customer.example", with: "news@customer2.example").utf8)
        let aligned = try #require(Self.sign(config, own))
        #expect(aligned.fields.contains("d=customer2.example;") && !aligned.fields.contains("d=esp.example"), "\(aligned.fields)")
        #expect(!aligned.fields.contains("i="), "\(aligned.fields)")
        let dir = try DKIMTestKeys.scratch("fallback")
        #expect(try DKIMExternalVerifiers.dkimpy([fallback.signed, aligned.signed], records: Self.records(keys), directory: dir) == [true, true])
    }

    @Test func badIdentitiesAreRefusedAtTheirLine() throws {
        let keys = try DKIMTestKeys.get()
        for bad in ["dkim-identity a=b@esp.example", "dkim-identity a..b@esp.example", "dkim-identity-fallback sender-or-from",
                    "dkim-identity news@", "dkim-identity a;b@esp.example"] {
            do {
                _ = try Self.config("    " + bad, keys: keys)
                Issue.record("'\(bad)' loaded")
            } catch {
                #expect("\(error)".hasPrefix("t.conf:6:"), "\(bad): \(error)")
            }
        }
        let c = try Self.config("    dkim-identity Sender-Or-From", keys: keys)
        #expect(c.sources[0].dkim.identity == .senderOrFrom)
    }
}
