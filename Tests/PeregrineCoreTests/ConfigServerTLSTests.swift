#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import PeregrineTLS
@testable import PeregrineConfig
@testable import PeregrineEngine
@testable import PeregrineDaemon

/// `smtp-server-tls-certificate` / `smtp-server-tls-key`, `smtp-listener … tls=yes`,
/// and the delivery TLS directives.
@Suite(.blockingIO) struct ConfigServerTLSTests {
    func parse(_ text: String) throws(ConfigError) -> PeregrineConfig {
        try PeregrineConfig.parse(text, file: "t.conf")
    }

    func error(_ text: String) -> String? {
        do { _ = try parse(text); return nil } catch { return error.description }
    }

    @Test func certificateAndKeyLoadAndListenersMayBeImplicit() throws {
        let files = try #require(TLSTestCertificates.files)
        let config = try parse("""
            smtp-listener 127.0.0.1:25
            smtp-listener 127.0.0.1:465 tls=yes
            smtp-server-tls-certificate \(files.certificate)
            smtp-server-tls-key \(files.key)
            """)
        #expect(config.smtpListeners.map(\.description) == ["127.0.0.1:25", "127.0.0.1:465"])
        #expect(config.implicitTLSListeners.map(\.description) == ["127.0.0.1:465"])
        let tls = try #require(config.serverTLS)
        #expect(tls.certificateFile == files.certificate && tls.location.line == 3)
        let context = try tls.makeContext()
        #expect(context.role == .server)
    }

    @Test func mistakesNameTheLine() throws {
        let files = try #require(TLSTestCertificates.files)
        #expect(error("smtp-server-tls-certificate \(files.certificate)")
                == "t.conf:1: smtp-server-tls-certificate needs smtp-server-tls-key as well")
        #expect(error("smtp-listener 127.0.0.1:25\nsmtp-server-tls-key \(files.key)")
                == "t.conf:2: smtp-server-tls-key needs smtp-server-tls-certificate as well")
        #expect(error("smtp-server-tls-certificate /nonexistent/cert.pem\nsmtp-server-tls-key \(files.key)")?
                .hasPrefix("t.conf:1: smtp-server-tls-certificate: cannot read '/nonexistent/cert.pem'") == true)
        #expect(error("smtp-listener 127.0.0.1:465 tls=yes")
                == "t.conf:1: smtp-listener 127.0.0.1:465 tls=yes needs smtp-server-tls-certificate and smtp-server-tls-key")
        #expect(error("smtp-listener 127.0.0.1:465 ssl")
                == "t.conf:1: smtp-listener: unknown option 'ssl' (expected tls=yes or tls=no)")
        // A key that is not the certificate's is caught when the context is built (check-config, run).
        let other = try #require(TLSTestCertificates.generate(commonName: "other.test"))
        defer { try? FileManager.default.removeItem(atPath: other.directory) }
        let config = try parse("smtp-server-tls-certificate \(files.certificate)\nsmtp-server-tls-key \(other.key)")
        #expect(throws: ConfigError.self) { try config.serverTLS?.makeContext() }
        // Key problems are reported at the key's line, naming the file; certificate problems at the certificate's.
        func contextError(_ text: String) throws -> String? {
            do { _ = try parse(text).serverTLS?.makeContext(); return nil } catch { return error.description }
        }
        let mismatch = try contextError("smtp-server-tls-certificate \(files.certificate)\nsmtp-server-tls-key \(other.key)")
        #expect(mismatch?.hasPrefix("t.conf:2: smtp-server-tls-key: ") == true, "\(mismatch ?? "")")
        // OpenSSL notices the mismatch as it loads the key ("key values mismatch").
        #expect(mismatch?.contains(other.key) == true && mismatch?.contains("mismatch") == true, "\(mismatch ?? "")")
        let notPEM = other.directory + "/not-pem.txt"
        try "this is not a PEM file\n".write(toFile: notPEM, atomically: true, encoding: .utf8)
        let badKey = try contextError("smtp-server-tls-certificate \(files.certificate)\n\nsmtp-server-tls-key \(notPEM)")
        #expect(badKey?.hasPrefix("t.conf:3: smtp-server-tls-key: ") == true && badKey?.contains(notPEM) == true,
                "\(badKey ?? "")")
        let badCert = try contextError("smtp-server-tls-certificate \(notPEM)\nsmtp-server-tls-key \(files.key)")
        #expect(badCert?.hasPrefix("t.conf:1: smtp-server-tls-certificate: ") == true && badCert?.contains(notPEM) == true,
                "\(badCert ?? "")")
    }

    @Test func domainTLSDirectives() throws {
        let config = try parse("""
            <domain secure.test>
                require-starttls yes
                tls-verify-hostname yes
            </domain>
            <domain plain.test>
                use-starttls no
            </domain>
            """)
        let secure = config.settings(forDomain: "secure.test")
        #expect(secure.requireStartTLS && secure.tlsVerifyHostname && secure.useStartTLS)
        let plain = config.settings(forDomain: "plain.test")
        #expect(!plain.useStartTLS && !plain.requireStartTLS && !plain.tlsVerifyHostname)
    }

    @Test func deliveryFallbackMemoryExpires() {
        let tls = DeliveryTLS()
        tls.context = try? TLSContext.client()
        var policy = DomainSettings()
        let host = RouteHost(name: "mx1.example.com", address: .v4(sockaddr_in()))
        #expect(tls.client(for: host, policy: policy, now: 0)?.policy == .opportunistic)
        #expect(tls.client(for: host, policy: policy, now: 0)?.serverName == "mx1.example.com")
        tls.rememberHandshakeFailure("MX1.example.com", now: 10)
        #expect(tls.client(for: host, policy: policy, now: 20) == nil)
        #expect(tls.client(for: host, policy: policy, now: 10 + tls.fallbackDuration)?.policy == .opportunistic)
        // Required never falls back; an address literal gets no SNI.
        policy.requireStartTLS = true
        tls.rememberHandshakeFailure("mx1.example.com", now: 30)
        #expect(tls.client(for: host, policy: policy, now: 40)?.policy == .required)
        let literal = RouteHost(name: "127.0.0.1", address: .v4(sockaddr_in()))
        #expect(tls.client(for: literal, policy: policy, now: 0)?.serverName == nil)
        #expect(tls.client(for: literal, policy: policy, now: 0)?.sessionKey == "127.0.0.1")
        policy.requireStartTLS = false
        policy.useStartTLS = false
        #expect(tls.client(for: host, policy: policy, now: 0) == nil)
    }
}
