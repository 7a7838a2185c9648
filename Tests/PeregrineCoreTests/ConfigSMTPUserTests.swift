import Testing
import PeregrineIO
@testable import PeregrineTLS
@testable import PeregrineDaemon

/// `<smtp-user>`, `<source {NAME}>`, `relay-domain`, the AUTH brute-force
/// directives, and the password hash format (issue 14).
@Suite struct ConfigSMTPUserTests {
    /// A hash at the lowest accepted cost: the tests hash a few times.
    static let aliceHash = PasswordHash.make(password: Array("alice-pw".utf8), iterations: PasswordHash.minimumIterations)!.encoded

    static func parse(_ text: String) throws -> PeregrineConfig {
        try PeregrineConfig.parse(text, file: "u.conf")
    }

    static func error(_ text: String) -> String? {
        do { _ = try parse(text); return nil } catch { return "\(error)" }
    }

    @Test func usersNamedSourcesAndRights() throws {
        let c = try Self.parse("""
        <virtual-mta vmta1>
            smtp-source-host 127.0.0.2 mta1.example.com
        </virtual-mta>
        <virtual-mta-pool bulk>
            virtual-mta vmta1
        </virtual-mta-pool>
        relay-domain Example.ORG, local.test
        relay-domain other.test
        smtp-auth-failure-delay 250ms
        smtp-auth-lockout-failures 4
        smtp-auth-lockout-time 2m
        <source 0/0>
            require-auth yes
            allow-unencrypted-plain-auth no
            max-message-size 1M
        </source>
        <source {relayers}>
            always-allow-relaying yes
            default-virtual-mta bulk
            max-message-size 20M
        </source>
        <source {Limited}>
            always-allow-relaying no
            max-msg-rate 100/h
        </source>
        <smtp-user alice>
            password-hash \(Self.aliceHash)
            source {relayers}
        </smtp-user>
        <smtp-user bob>
            password "bob pw # not a comment"
            source {limited}
        </smtp-user>
        <smtp-user carol>
            password carol-pw
        </smtp-user>
        """)
        #expect(c.authEnabled)
        #expect(c.auth.users.map(\.name) == ["alice", "bob", "carol"])
        #expect(c.auth.failureDelay == .milliseconds(250) && c.auth.lockoutFailures == 4 && c.auth.lockoutTime == .seconds(120))
        #expect(c.relayDomains == ["example.org", "local.test", "other.test"])
        #expect(c.isRelayDomain("LOCAL.test") && !c.isRelayDomain("example.com"))

        let peer = try SocketAddress(ip: "192.0.2.9", port: 1000)
        let byAddress = c.source(for: peer)
        #expect(byAddress.requireAuth && !byAddress.allowUnencryptedPlainAuth && byAddress.maxMessageSize == 1 << 20)
        // Named sources match no address.
        #expect(c.sources.filter { $0.name != nil }.count == 2)
        #expect(byAddress.name == nil)

        let alice = try #require(c.auth.user(named: "alice"))
        let a = c.source(forUser: alice, peer: peer)
        #expect(a.name == "relayers" && a.alwaysAllowRelaying && a.defaultVirtualMTA == "bulk" && a.maxMessageSize == 20 << 20)
        let bob = try #require(c.auth.user(named: "bob"))
        #expect(bob.secret == .plainDigest(sha256(Array("bob pw # not a comment".utf8))))
        #expect(!c.source(forUser: bob, peer: peer).alwaysAllowRelaying)
        #expect(c.source(forUser: bob, peer: peer).maxMsgRate == .limited(count: 100, per: .seconds(3600)))
        #expect(a.maxMsgRate == .unlimited)
        // No source: the address's rights plus relaying, and require-auth is met.
        let carol = try #require(c.auth.user(named: "carol"))
        let k = c.source(forUser: carol, peer: peer)
        #expect(k.alwaysAllowRelaying && !k.requireAuth && k.maxMessageSize == 1 << 20)
        // User names are exact.
        #expect(c.auth.user(named: "Alice") == nil)
    }

    @Test func defaultsWithoutUsers() throws {
        let c = try Self.parse("<source 127.0.0.0/8>\n  always-allow-relaying yes\n</source>")
        #expect(!c.authEnabled)
        #expect(c.auth.failureDelay == .seconds(1) && c.auth.lockoutFailures == 10 && c.auth.lockoutTime == .seconds(900))
        #expect(c.relayDomains.isEmpty)
    }

    @Test func mistakesGetFileAndLine() {
        #expect(Self.error("<smtp-user a>\n</smtp-user>")
                == "u.conf:1: <smtp-user a> needs password-hash (see 'peregrine passwd') or password")
        #expect(Self.error("<smtp-user a>\n  password x\n  password-hash \(Self.aliceHash)\n</smtp-user>")
                == "u.conf:3: password-hash: <smtp-user a> has both password and password-hash; keep one")
        #expect(Self.error("<smtp-user a>\n  password x\n  password y\n</smtp-user>")
                == "u.conf:3: password is already set in this block at line 2")
        #expect(Self.error("<smtp-user a>\n  password \"\"\n</smtp-user>") == "u.conf:2: password: an empty password is not allowed")
        #expect(Self.error("<smtp-user a>\n  password-hash $md5$abc\n</smtp-user>")?
            .hasPrefix("u.conf:2: password-hash: expected $pbkdf2-sha256$ITERATIONS$SALT$HASH") == true)
        #expect(Self.error("<smtp-user a>\n  password-hash $scrypt$1$abc$def\n</smtp-user>")
                == "u.conf:2: password-hash: unknown hash scheme 'scrypt' (only pbkdf2-sha256 is supported)")
        let weak = Self.aliceHash.replacingOccurrences(of: "$100000$", with: "$1000$")
        #expect(Self.error("<smtp-user a>\n  password-hash \(weak)\n</smtp-user>")
                == "u.conf:2: password-hash: iteration count '1000' is not between 100000 and 100000000")
        let truncated = String(Self.aliceHash.dropLast(4))
        #expect(Self.error("<smtp-user a>\n  password-hash \(truncated)\n</smtp-user>")
                == "u.conf:2: password-hash: the hash is not base64 of 32 bytes")
        #expect(Self.error("<smtp-user a>\n  password x\n  source relayers\n</smtp-user>")
                == "u.conf:3: source: expected a named source such as {submission}, got 'relayers'")
        #expect(Self.error("<smtp-user a>\n  password x\n  source {nowhere}\n</smtp-user>")
                == "u.conf:3: source: '{nowhere}' is not a defined <source {nowhere}> block")
        #expect(Self.error("<smtp-user a>\n  password x\n</smtp-user>\n<smtp-user a>\n  password y\n</smtp-user>")
                == "u.conf:4: <smtp-user a> is already defined at line 1")
        #expect(Self.error("<smtp-user a>\n  password x\n  max-smtp-out 3\n</smtp-user>")
                == "u.conf:3: unknown directive 'max-smtp-out' in <smtp-user a>")
        #expect(Self.error("password x") == "u.conf:1: password is not allowed at the top level (it belongs in <smtp-user>)")
        #expect(Self.error("<source 0/0>\n  allow-unencrypted-plain-auth maybe\n</source>")
                == "u.conf:2: allow-unencrypted-plain-auth: 'maybe' is not yes or no")
        #expect(Self.error("smtp-auth-lockout-failures 0") == "u.conf:1: smtp-auth-lockout-failures: 0 is out of range 1...1000")
        #expect(Self.error("smtp-auth-failure-delay 2m")?.hasPrefix("u.conf:1: smtp-auth-failure-delay: '2m' is too long") == true)
        #expect(Self.error("smtp-auth-lockout-time 10ms")?.hasPrefix("u.conf:1: smtp-auth-lockout-time: '10ms' is too short") == true)
        #expect(Self.error("relay-domain not_a..domain")?.hasPrefix("u.conf:1: relay-domain:") == true)
        #expect(Self.error("<source {bad name}>\n</source>")?.hasPrefix("u.conf:1:") == true)
    }

    /// RFC 7914 §11's PBKDF2-HMAC-SHA-256 vector (P="passwd", S="salt", c=1), first 32 bytes.
    @Test func pbkdf2MatchesThePublishedVector() throws {
        let dk = try #require(PasswordHash.derive(Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1))
        let hex = dk.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        #expect(hex == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    }

    @Test func hashRoundTripAndConstantTimeCheck() throws {
        let parsed = try PasswordHash(parsing: Self.aliceHash)
        #expect(parsed.encoded == Self.aliceHash)
        #expect(parsed.iterations == PasswordHash.minimumIterations && parsed.salt.count == 16 && parsed.hash.count == 32)
        #expect(parsed.matches(Array("alice-pw".utf8)))
        #expect(!parsed.matches(Array("alice-pw ".utf8)))
        #expect(!parsed.matches([]))
        // Two hashes of one password differ (fresh salt) and both match it.
        let again = try #require(PasswordHash.make(password: Array("alice-pw".utf8), iterations: PasswordHash.minimumIterations))
        #expect(again.salt != parsed.salt && again.matches(Array("alice-pw".utf8)))
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]) && !constantTimeEqual([1, 2, 3], [1, 2, 4]) && !constantTimeEqual([1], [1, 1]))
    }
}
