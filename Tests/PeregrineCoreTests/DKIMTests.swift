import PeregrineIO
import Foundation
import Testing
@testable import PeregrineDKIM
import PeregrineTestSupport
import PeregrineConfig
import PeregrineDaemon

/// Keys made once per test process with the openssl command line.
enum DKIMTestKeys {
    struct Set: Sendable {
        let directory: String
        let rsa: DKIMExternalVerifiers.TestKey
        let ed25519: DKIMExternalVerifiers.TestKey
    }

    static let shared: Result<Set, DKIMExternalVerifiers.ToolError> = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("peregrine-dkim-\(getpid())").path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            atexit { try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.appendingPathComponent("peregrine-dkim-\(getpid())").path) }
            return .success(Set(directory: dir,
                                rsa: try DKIMExternalVerifiers.makeKey(.rsa2048, name: "rsa", in: dir),
                                ed25519: try DKIMExternalVerifiers.makeKey(.ed25519, name: "ed", in: dir)))
        } catch let e as DKIMExternalVerifiers.ToolError {
            return .failure(e)
        } catch {
            return .failure(DKIMExternalVerifiers.ToolError("\(error)"))
        }
    }()

    static func get() throws -> Set { try shared.get() }

    /// A fresh directory for one test's files.
    static func scratch(_ name: String) throws -> String {
        let dir = try get().directory + "/\(name)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

func sha256(_ bytes: [UInt8]) -> [UInt8] {
    let c = SHA256Context()
    c.update(bytes)
    return c.finish()
}

func bodyHash(_ body: String, _ c: DKIMCanonicalization, chunks: [Int]? = nil) -> [UInt8] {
    let h = DKIMBodyHasher()
    h.reset(c)
    let bytes = Array(body.utf8)
    bytes.withUnsafeBytes { raw in
        var start = 0
        for size in chunks ?? [bytes.count] where start < bytes.count {
            let end = min(bytes.count, start + size)
            h.update(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
            start = end
        }
        if start < bytes.count { h.update(UnsafeRawBufferPointer(rebasing: raw[start..<bytes.count])) }
    }
    return h.finish()
}

func canonicalHeaders(_ headers: String, _ c: DKIMCanonicalization) -> String {
    var fields = DKIMHeaderFields()
    let bytes = Array((headers + "\r\n").utf8)
    var out: [UInt8] = []
    bytes.withUnsafeBytes { raw in
        fields.parse(raw)
        for f in fields.fields {
            DKIMHeaderCanonicalizer.append(field: raw, name: f.name, value: f.value, fullEnd: f.range.upperBound, c,
                                           includeLineEnd: true, into: &out)
        }
    }
    return String(decoding: out, as: UTF8.self)
}

@Suite struct DKIMCanonicalizationTests {
    // RFC 6376 §3.4.5: the example message and its four canonical forms.
    static let exampleHeaders = "A: X\r\nB : Y\t\r\n\tZ  \r\n"
    static let exampleBody = " C \r\nD \t E\r\n\r\n\r\n"

    @Test func rfc6376RelaxedExample() {
        #expect(canonicalHeaders(Self.exampleHeaders, .relaxed) == "a:X\r\nb:Y Z\r\n")
        #expect(bodyHash(Self.exampleBody, .relaxed) == sha256(Array(" C\r\nD E\r\n".utf8)))
    }

    @Test func rfc6376SimpleExample() {
        #expect(canonicalHeaders(Self.exampleHeaders, .simple) == Self.exampleHeaders)
        #expect(bodyHash(Self.exampleBody, .simple) == sha256(Array(" C \r\nD \t E\r\n".utf8)))
    }

    /// RFC 6376 §3.4.3/§3.4.4 (and errata 3871): an empty body is CRLF under
    /// simple and nothing under relaxed; the well-known bh= values.
    @Test func emptyBodyHashes() {
        #expect(Base64.encode(bodyHash("", .simple)) == "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=")
        #expect(Base64.encode(bodyHash("", .relaxed)) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        #expect(bodyHash("\r\n\r\n", .simple) == bodyHash("", .simple))
        #expect(bodyHash(" \r\n\t\r\n", .relaxed) == bodyHash("", .relaxed))
        // A last line without CRLF gets one.
        #expect(bodyHash("abc", .simple) == sha256(Array("abc\r\n".utf8)))
        #expect(bodyHash("abc \t", .relaxed) == sha256(Array("abc\r\n".utf8)))
    }

    /// The streaming hash gives the same digest however the body is split.
    @Test func bodyHashSplitAtEveryByte() {
        let bodies = [Self.exampleBody, "a\r\n\r\n \r\nb  c\r\n\r\n", "x\ry\r\n\r\r\n\r\n", " \t \r\n", "tail without crlf  "]
        for body in bodies {
            for c in [DKIMCanonicalization.simple, .relaxed] {
                let whole = bodyHash(body, c)
                for split in 1..<max(2, body.utf8.count) {
                    #expect(bodyHash(body, c, chunks: [split, 1, 2, 3]) == whole, "split \(split) of \(body.debugDescription) \(c)")
                }
            }
        }
    }

    @Test func bodyLengthLimitCountsCanonicalBytes() {
        let h = DKIMBodyHasher()
        h.reset(.relaxed, limit: 5)
        Array("ab  cd\r\nmore\r\n".utf8).withUnsafeBytes { h.update($0) }
        let limited = h.finish()
        #expect(limited == sha256(Array("ab cd".utf8)))
        #expect(h.canonicalLength == 13)
    }

    @Test func canonicalizationTags() {
        #expect(DKIMCanonicalizations(tag: "relaxed/simple") == DKIMCanonicalizations(header: .relaxed, body: .simple))
        #expect(DKIMCanonicalizations(tag: "relaxed") == DKIMCanonicalizations(header: .relaxed, body: .simple))
        #expect(DKIMCanonicalizations(tag: "nofws") == nil)
        #expect(DKIMCanonicalizations(tag: "simple/loose") == nil)
    }
}

@Suite(.blockingIO) struct DKIMKeyTests {
    @Test func missingAndBadKeyFiles() throws {
        let dir = try DKIMTestKeys.scratch("keys")
        #expect(throws: DKIMError.self) { try DKIMPrivateKey.load(path: dir + "/absent.pem") }
        try "not a key\n".write(toFile: dir + "/junk.pem", atomically: true, encoding: .utf8)
        do {
            _ = try DKIMPrivateKey.load(path: dir + "/junk.pem")
            Issue.record("a file of junk loaded as a key")
        } catch {
            #expect(error.description.contains("junk.pem"))
        }
    }

    /// RFC 8301: RSA keys under 1024 bits are refused; 1024 and 4096 load.
    @Test func rsaKeySizes() throws {
        let dir = try DKIMTestKeys.scratch("sizes")
        let small = dir + "/512.pem"
        let (rc, out) = runTool(findTool("openssl") ?? "openssl",
                                ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", small])
        #expect(rc == 0, "\(out)")
        do {
            _ = try DKIMPrivateKey.load(path: small)
            Issue.record("a 512-bit RSA key loaded")
        } catch {
            #expect(error.description.contains("512 bits"))
        }
        for kind in [DKIMExternalVerifiers.KeyKind.rsa1024, .rsa4096] {
            let key = try DKIMExternalVerifiers.makeKey(kind, name: kind.rawValue, in: dir)
            let loaded = try DKIMPrivateKey.load(path: key.privateKeyPath)
            #expect(loaded.algorithm == .rsaSHA256)
            #expect(loaded.bits == (kind == .rsa1024 ? 1024 : 4096))
            // The record this module would publish is the one openssl's DER gives.
            #expect(loaded.dnsRecord == key.record)
        }
    }

    @Test func ed25519RecordMatchesOpenSSL() throws {
        let keys = try DKIMTestKeys.get()
        let loaded = try DKIMPrivateKey.load(path: keys.ed25519.privateKeyPath)
        #expect(loaded.algorithm == .ed25519SHA256)
        #expect(loaded.dnsRecord == keys.ed25519.record)
        #expect(try DKIMPublicKey.load(path: keys.ed25519.publicKeyPath).algorithm == .ed25519SHA256)
        #expect(try DKIMPublicKey(dnsRecord: keys.rsa.record).algorithm == .rsaSHA256)
        #expect(throws: DKIMError.self) { try DKIMPublicKey(dnsRecord: "v=DKIM1; k=rsa; p=") }
    }
}

/// Signing with this module, verified by dkimpy and opendkim-testmsg (and by
/// this module's verifier, which must agree with them).
@Suite(.blockingIO) struct DKIMSignatureTests {
    static let canonicalizations = ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]

    struct Signed {
        var label: String
        var message: [UInt8]
    }

    static func identity(_ keyPath: String, selector: String, _ c: String, domain: String = "example.com") throws -> DKIMSigningIdentity {
        DKIMSigningIdentity(domain: domain, selector: selector, key: try DKIMPrivateKey.load(path: keyPath),
                            canonicalization: DKIMCanonicalizations(tag: c) ?? DKIMCanonicalizations())
    }

    static func sign(_ message: [UInt8], _ identities: [DKIMSigningIdentity], now: Int64 = 1_796_472_000) throws -> [UInt8] {
        let signer = DKIMSigner()
        var out: [UInt8] = []
        try message.withUnsafeBytes { try signer.sign(message: $0, identities: identities, now: now, into: &out) }
        return out + message
    }

    static func records(_ keys: DKIMTestKeys.Set) -> [String: String] {
        ["rsa._domainkey.example.com": keys.rsa.record, "ed._domainkey.example.com": keys.ed25519.record]
    }

    static func ownVerdict(_ message: [UInt8], _ keys: DKIMTestKeys.Set) throws -> DKIMVerificationResult {
        let rsa = try DKIMPublicKey(dnsRecord: keys.rsa.record), ed = try DKIMPublicKey(dnsRecord: keys.ed25519.record)
        let results = DKIMVerifier().verify(message: message, now: 1_796_472_100) { _, s in s == "rsa" ? rsa : s == "ed" ? ed : nil }
        return results.first ?? DKIMVerificationResult(status: .permerror, reason: "no signature", domain: "", selector: "")
    }

    /// Every corpus message × both algorithms × four canonicalisations: each
    /// signature passes dkimpy, opendkim-testmsg and our verifier; the same
    /// message with one body byte or one Subject letter changed fails all three.
    @Test func everySignatureVerifiesIndependently() throws {
        let keys = try DKIMTestKeys.get()
        let dir = try DKIMTestKeys.scratch("corpus")
        var good: [Signed] = [], bad: [Signed] = []
        for message in DKIMTestCorpus.messages() {
            for c in Self.canonicalizations {
                for (selector, path) in [("rsa", keys.rsa.privateKeyPath), ("ed", keys.ed25519.privateKeyPath)] {
                    let signed = try Self.sign(message.bytes, [try Self.identity(path, selector: selector, c)])
                    let label = "\(message.name) \(selector) \(c)"
                    good.append(Signed(label: label, message: signed))
                    bad.append(Signed(label: label + " tampered body", message: DKIMTestCorpus.tamperedBody(signed)))
                    bad.append(Signed(label: label + " tampered header", message: DKIMTestCorpus.tamperedHeader(signed)))
                }
            }
        }
        let all = good + bad
        let py = try DKIMExternalVerifiers.dkimpy(all.map(\.message), records: Self.records(keys), directory: dir)
        let od = try DKIMExternalVerifiers.opendkim(all.map(\.message), records: Self.records(keys), directory: dir)
        for (i, s) in all.enumerated() {
            let shouldPass = i < good.count
            #expect(py[i] == shouldPass, "dkimpy: \(s.label)")
            #expect(od[i].pass == shouldPass, "opendkim-testmsg: \(s.label): \(od[i].output)")
            let own = try Self.ownVerdict(s.message, keys)
            #expect((own.status == .pass) == shouldPass, "PeregrineDKIM: \(s.label): \(own)")
        }
        #expect(good.count == 48)
    }

    /// Dual signing (RSA + Ed25519, and a second domain): every signature
    /// verifies on its own; the body is hashed once per canonicalisation.
    @Test func dualSignatures() throws {
        let keys = try DKIMTestKeys.get()
        let dir = try DKIMTestKeys.scratch("dual")
        let message = DKIMTestCorpus.messages()[0].bytes
        let signed = try Self.sign(message, [try Self.identity(keys.rsa.privateKeyPath, selector: "rsa", "relaxed/relaxed"),
                                             try Self.identity(keys.ed25519.privateKeyPath, selector: "ed", "relaxed/relaxed"),
                                             try Self.identity(keys.rsa.privateKeyPath, selector: "rsa", "simple/simple",
                                                               domain: "esp.example")])
        var records = Self.records(keys)
        records["rsa._domainkey.esp.example"] = keys.rsa.record
        let singles = (0..<3).map { DKIMExternalVerifiers.keepingOnlySignature($0, of: signed) }
        #expect(Set(singles.map(\.count)).count == 3 || singles[0] != singles[1])
        #expect(try DKIMExternalVerifiers.dkimpy(singles, records: records, directory: dir) == [true, true, true])
        #expect(try DKIMExternalVerifiers.opendkim(singles, records: records, directory: dir).map(\.pass) == [true, true, true])
        let rsa = try DKIMPublicKey(dnsRecord: keys.rsa.record), ed = try DKIMPublicKey(dnsRecord: keys.ed25519.record)
        let own = DKIMVerifier().verify(message: signed, now: nil) { _, s in s == "rsa" ? rsa : ed }
        #expect(own.map(\.status) == [.pass, .pass, .pass])
        #expect(own.map(\.domain) == ["example.com", "example.com", "esp.example"])
    }

    /// l= and x=: dkimpy accepts content appended after an l= body (that is
    /// what l= means, and why it is off by default); x= in the past fails.
    @Test func bodyLengthAndExpiry() throws {
        let keys = try DKIMTestKeys.get()
        let dir = try DKIMTestKeys.scratch("lx")
        let message = DKIMTestCorpus.messages()[0].bytes
        var identity = try Self.identity(keys.rsa.privateKeyPath, selector: "rsa", "relaxed/relaxed")
        identity.bodyLengthLimit = true
        identity.expireAfterSeconds = 3600
        let now = Int64(Date().timeIntervalSince1970)
        let signed = try Self.sign(message, [identity], now: now)
        let text = String(decoding: signed, as: UTF8.self)
        #expect(text.contains(" l=\(Array("Hello,\r\nthis is a test.\r\n.a line that starts with a dot (stuffed on the wire)\r\n".utf8).count);"))
        #expect(text.contains(" x=\(now + 3600);"))
        let appended = signed + Array("appended by a forwarder\r\n".utf8)
        #expect(try DKIMExternalVerifiers.dkimpy([signed, appended], records: Self.records(keys), directory: dir) == [true, true])
        let rsa = try DKIMPublicKey(dnsRecord: keys.rsa.record)
        #expect(DKIMVerifier().verify(message: appended, now: now) { _, _ in rsa }.map(\.status) == [.pass])
        #expect(DKIMVerifier().verify(message: signed, now: now + 3601) { _, _ in rsa }.map(\.status) == [.fail])
        // Expired two days ago (dkimpy allows 10 hours of clock skew): dkimpy says fail too.
        let old = try Self.sign(message, [identity], now: now - 2 * 86_400)
        #expect(try DKIMExternalVerifiers.dkimpy([old], records: Self.records(keys), directory: dir) == [false])
    }

    /// The folded DKIM-Signature keeps every line within 78 characters.
    @Test func signatureFieldIsFolded() throws {
        let keys = try DKIMTestKeys.get()
        let signed = try Self.sign(DKIMTestCorpus.messages()[1].bytes,
                                   [try Self.identity(keys.rsa.privateKeyPath, selector: "rsa", "relaxed/relaxed")])
        let header = String(decoding: signed[..<(DKIMTestCorpus.headerEnd(signed) ?? 0)], as: UTF8.self)
        let field = header.components(separatedBy: "\r\n").prefix { !$0.hasPrefix("From:") }
        #expect(field.count > 3)
        for line in field { #expect(line.utf8.count <= 78, "\(line)") }
        #expect(field.last?.contains("b=") == true || field.contains { $0.contains("\tb=") })
    }

    @Test func messageWithoutFromIsNotSigned() throws {
        let keys = try DKIMTestKeys.get()
        #expect(throws: DKIMError.self) {
            try Self.sign(Array("To: a@b.c\r\n\r\nbody\r\n".utf8),
                          [try Self.identity(keys.rsa.privateKeyPath, selector: "rsa", "relaxed/relaxed")])
        }
    }

    /// The sink's verifier must agree with dkimpy: a corpus signed by dkimpy
    /// and by this module, intact and tampered, both algorithms.
    @Test func verifierAgreesWithDkimpy() throws {
        let keys = try DKIMTestKeys.get()
        let dir = try DKIMTestKeys.scratch("agree")
        var jobs: [DKIMExternalVerifiers.SignJob] = []
        var labels: [String] = []
        for (n, message) in DKIMTestCorpus.messages().enumerated() {
            for c in Self.canonicalizations {
                for (selector, path, ed) in [("rsa", keys.rsa.privateKeyPath, false), ("ed", keys.ed25519.privateKeyPath, true)] {
                    jobs.append(.init(message: message.bytes, selector: selector, domain: "example.com",
                                      keyPath: path, canonicalization: c, ed25519: ed,
                                      name: "m\(n)-\(selector)-\(c.replacingOccurrences(of: "/", with: "-"))"))
                    labels.append("\(message.name) \(selector) \(c) signed by dkimpy")
                }
            }
        }
        var corpus: [Signed] = []
        for (label, byDkimpy) in zip(labels, try DKIMExternalVerifiers.dkimpySignAll(jobs, directory: dir)) {
            corpus.append(Signed(label: label, message: byDkimpy))
            corpus.append(Signed(label: label + ", body tampered", message: DKIMTestCorpus.tamperedBody(byDkimpy)))
            corpus.append(Signed(label: label + ", header tampered", message: DKIMTestCorpus.tamperedHeader(byDkimpy)))
        }
        let py = try DKIMExternalVerifiers.dkimpy(corpus.map(\.message), records: Self.records(keys), directory: dir)
        var passes = 0
        for (i, s) in corpus.enumerated() {
            let own = try Self.ownVerdict(s.message, keys)
            #expect((own.status == .pass) == py[i], "\(s.label): dkimpy \(py[i]), PeregrineDKIM \(own)")
            if py[i] { passes += 1 }
        }
        // Not vacuous: a third of the corpus passes, two thirds fail.
        #expect(passes == corpus.count / 3)
    }
}

@Suite(.blockingIO) struct DKIMConfigTests {
    static func config(_ body: String) -> String {
        "smtp-listener 127.0.0.1:2525\n<virtual-mta vmta1>\n    smtp-source-host 127.0.0.10 vmta1.test\n</virtual-mta>\n" + body
    }

    /// A missing, unreadable or bad key file is a config error at the domain-key's line.
    @Test func badKeyFilesAreConfigErrorsWithTheirLine() throws {
        let dir = try DKIMTestKeys.scratch("config")
        try "junk\n".write(toFile: dir + "/junk.pem", atomically: true, encoding: .utf8)
        for (path, why) in [(dir + "/absent.pem", "No such file"), (dir + "/junk.pem", "not a PEM private key")] {
            do {
                _ = try PeregrineConfig.parse(Self.config("<domain *>\n    dkim-sign yes\n    domain-key s1,example.com,\(path)\n</domain>\n"),
                                              file: "t.conf")
                Issue.record("\(path) loaded")
            } catch {
                #expect(error.description.hasPrefix("t.conf:7:"), "\(error)")
                #expect(error.description.contains(why), "\(error)")
            }
        }
        #expect(throws: ConfigError.self) {
            try PeregrineConfig.parse(Self.config("<domain *>\n    domain-key s1 example.com\n</domain>\n"), file: "t.conf")
        }
        #expect(throws: ConfigError.self) {
            try PeregrineConfig.parse(Self.config("<domain *>\n    dkim-canonicalization loose\n</domain>\n"), file: "t.conf")
        }
    }

    /// domain-key repeats in a block (dual signing); each file is loaded once,
    /// at load, in every scope that may hold it.
    @Test func keysLoadInEveryScope() throws {
        let keys = try DKIMTestKeys.get()
        let config = try PeregrineConfig.parse("""
            smtp-listener 127.0.0.1:2525
            <source 127.0.0.0/8>
                always-allow-relaying yes
                domain-key s1,example.com,\(keys.rsa.privateKeyPath)
                domain-key s2,example.com,\(keys.ed25519.privateKeyPath)
                dkim-headers from:to:subject
            </source>
            <virtual-mta vmta1>
                smtp-source-host 127.0.0.10 vmta1.test
                domain-key esp,esp.test,\(keys.rsa.privateKeyPath)
                dkim-also-sign-as esp.test
                <domain gmail.com>
                    dkim-body-length-limit no
                </domain>
            </virtual-mta>
            <domain yahoo.com>
                dkim-expire-after 7d
                dkim-required yes
            </domain>

            """, file: "t.conf")
        #expect(config.dkimConfigured)
        #expect(config.dkimKeys.byPath.count == 2)
        #expect(config.sources[0].dkim.keys.map(\.selector) == ["s1", "s2"])
        #expect(config.sources[0].dkim.headers == ["from", "to", "subject"])
        #expect(config.virtualMTAs[0].dkim.alsoSignAs == "esp.test")
        #expect(config.domains[0].dkim.required == true)
        #expect(config.domains[0].dkim.expireAfter == .some(.seconds(7 * 86_400)))
    }

    /// A reload reads the key files again (a rotated key takes effect).
    @Test func reloadReadsKeysAgain() throws {
        let keys = try DKIMTestKeys.get()
        let text = Self.config("<domain *>\n    domain-key s1,example.com,\(keys.rsa.privateKeyPath)\n</domain>\n")
        let a = try PeregrineConfig.parse(text, file: "t.conf"), b = try PeregrineConfig.parse(text, file: "t.conf")
        #expect(a.dkimKeys[keys.rsa.privateKeyPath] != nil)
        #expect(a.dkimKeys[keys.rsa.privateKeyPath] !== b.dkimKeys[keys.rsa.privateKeyPath])
    }
}
