import PeregrineIO
import COpenSSL

/// Who signs: `d=`, `s=`, the key, and how (the `domain-key` and `dkim-*`
/// directives of one scope).
public struct DKIMSigningIdentity: Sendable {
    public var domain: String
    public var selector: String
    public var key: DKIMPrivateKey
    public var canonicalization: DKIMCanonicalizations
    /// Field names to sign when the message has them (`From` is always signed).
    public var headers: [String]
    /// Add `l=` (the body length signed). Off by default: `l=` lets anyone
    /// append content under a valid signature.
    public var bodyLengthLimit: Bool
    /// `x=` = `t=` + this many seconds; nil: no `x=`.
    public var expireAfterSeconds: Int64?
    /// `i=`, the agent or user identifier (`user@domain` or `@domain`, its
    /// domain `domain` or a subdomain, RFC 6376 §3.5); nil: no `i=`
    /// (verifiers then take `@d`). Only atext characters, so it needs no
    /// quoted-printable encoding.
    public var agentIdentifier: String?

    public init(domain: String, selector: String, key: DKIMPrivateKey,
                canonicalization: DKIMCanonicalizations = DKIMCanonicalizations(),
                headers: [String] = DKIMSigningIdentity.defaultHeaders,
                bodyLengthLimit: Bool = false, expireAfterSeconds: Int64? = nil) {
        self.domain = domain
        self.selector = selector
        self.key = key
        self.canonicalization = canonicalization
        self.headers = headers
        self.bodyLengthLimit = bodyLengthLimit
        self.expireAfterSeconds = expireAfterSeconds
    }

    /// RFC 6376 §5.4.1's list, plus the RFC 8058 fields (Gmail and Yahoo honour
    /// one-click unsubscribe only when the signature covers them).
    public static let defaultHeaders = [
        "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
        "content-type", "content-transfer-encoding", "content-id", "content-description",
        "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
        "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe", "list-subscribe",
        "list-post", "list-owner", "list-archive", "list-unsubscribe-post", "feedback-id",
    ]
}

/// Signs messages. One per thread (a loop worker): it owns the reusable
/// hashing state, scratch buffers and, per key, the OpenSSL signing context,
/// so a signature costs the hashing and the private-key operation and no
/// key parsing or context set-up. Once its buffers have grown, a signature
/// allocates nothing in Swift (header names are compared in place, the
/// field is written straight into reused buffers). Not thread-safe.
public final class DKIMSigner {
    private let bodyHasher = DKIMBodyHasher()
    private let headerHash = SHA256Context()
    private var fields = DKIMHeaderFields()
    private var writer = FieldWriter()
    private var encoded: [UInt8] = []
    private var signature = [UInt8](repeating: 0, count: 1024)
    private var contexts: [ObjectIdentifier: KeyContext] = [:]
    /// The body hash per canonicalisation of the current message (one per
    /// canonicalisation however many signatures use it): digest, canonical length.
    private var relaxedBody = BodyHash()
    private var simpleBody = BodyHash()
    private var headerDigest = [UInt8](repeating: 0, count: 32)

    private struct BodyHash {
        var digest = [UInt8](repeating: 0, count: 32)
        var length = 0
        var valid = false
    }

    /// The key is kept alive with its context so the identifier stays unique.
    private final class KeyContext {
        let key: DKIMPrivateKey
        let pkeyCtx: OpaquePointer?
        /// Ed25519: a context initialised once for the key (`EVP_DigestSignInit`),
        /// copied into `mdCtx` per message. Ed25519 is one-shot in OpenSSL 3
        /// (`EVP_DigestSign`); the copy skips the per-message algorithm fetch
        /// and key set-up of a fresh init (measured in results/profile-dkim-*.md).
        let preparedMdCtx: OpaquePointer?
        let mdCtx: OpaquePointer?
        init(key: DKIMPrivateKey) throws(DKIMError) {
            self.key = key
            switch key.algorithm {
            case .rsaSHA256:
                guard let ctx = EVP_PKEY_CTX_new(key.pkey, nil) else { throw DKIMError("EVP_PKEY_CTX_new failed") }
                guard EVP_PKEY_sign_init(ctx) == 1,
                      EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1,
                      EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 else {
                    EVP_PKEY_CTX_free(ctx)
                    throw DKIMError("RSA signing context: \(openSSLErrorText())")
                }
                pkeyCtx = ctx
                preparedMdCtx = nil
                mdCtx = nil
            case .ed25519SHA256:
                guard let prepared = EVP_MD_CTX_new() else { throw DKIMError("EVP_MD_CTX_new failed") }
                guard EVP_DigestSignInit(prepared, nil, nil, nil, key.pkey) == 1 else {
                    EVP_MD_CTX_free(prepared)
                    throw DKIMError("Ed25519 signing context: \(openSSLErrorText())")
                }
                guard let md = EVP_MD_CTX_new() else {
                    EVP_MD_CTX_free(prepared)
                    throw DKIMError("EVP_MD_CTX_new failed")
                }
                pkeyCtx = nil
                preparedMdCtx = prepared
                mdCtx = md
            }
        }
        deinit {
            if let pkeyCtx { EVP_PKEY_CTX_free(pkeyCtx) }
            if let preparedMdCtx { EVP_MD_CTX_free(preparedMdCtx) }
            if let mdCtx { EVP_MD_CTX_free(mdCtx) }
        }
    }

    public init() {}

    /// Appends one `DKIM-Signature:` field (folded, CRLF-terminated) per
    /// identity to `out`, in order; prepend them to the message. `message`
    /// is the header section and body exactly as they will be sent (CRLF line
    /// ends, not dot-stuffed). `now` is the signing time in Unix seconds (`t=`).
    public func sign(message: UnsafeRawBufferPointer, identities: [DKIMSigningIdentity], now: Int64,
                     into out: inout [UInt8]) throws(DKIMError) {
        fields.parse(message)
        try signParsed(message, identities: identities, now: now, into: &out)
    }

    /// The same for a message whose header section the caller has already
    /// scanned (`fields` describes `message`): nothing is scanned twice.
    public func sign(message: UnsafeRawBufferPointer, fields given: DKIMHeaderFields, identities: [DKIMSigningIdentity],
                     now: Int64, into out: inout [UInt8]) throws(DKIMError) {
        let own = fields
        fields = given
        // Hand the caller's storage back unshared, or its next edit would copy it.
        defer { fields = own }
        try signParsed(message, identities: identities, now: now, into: &out)
    }

    private func signParsed(_ message: UnsafeRawBufferPointer, identities: [DKIMSigningIdentity], now: Int64,
                            into out: inout [UInt8]) throws(DKIMError) {
        relaxedBody.valid = false
        simpleBody.valid = false
        for identity in identities {
            let c = identity.canonicalization.body
            hashBody(message, c)
            try signOne(message, identity, body: c == .relaxed ? relaxedBody : simpleBody, now: now, into: &out)
        }
    }

    /// One body hash per canonicalisation, however many signatures use it.
    private func hashBody(_ message: UnsafeRawBufferPointer, _ c: DKIMCanonicalization) {
        if c == .relaxed ? relaxedBody.valid : simpleBody.valid { return }
        bodyHasher.reset(c)
        bodyHasher.update(UnsafeRawBufferPointer(rebasing: message[fields.bodyStart..<message.count]))
        func store(_ h: inout BodyHash) {
            h.digest.withUnsafeMutableBytes { bodyHasher.finish(into: $0) }
            h.length = bodyHasher.canonicalLength
            h.valid = true
        }
        if c == .relaxed { store(&relaxedBody) } else { store(&simpleBody) }
    }

    private func context(for key: DKIMPrivateKey) throws(DKIMError) -> KeyContext {
        if let known = contexts[ObjectIdentifier(key)] { return known }
        // Keys are replaced on reload; forget old ones rather than grow without bound.
        if contexts.count >= 64 { contexts.removeAll() }
        let made = try KeyContext(key: key)
        contexts[ObjectIdentifier(key)] = made
        return made
    }

    /// The field text and the header hash input of one signature, built in
    /// buffers reused across messages. A struct worked on as a local: the
    /// same appends on the class's stored arrays paid a dynamic exclusivity
    /// check (swift_beginAccess) and a uniqueness check per byte, most of
    /// the header side of the profile (results/profile-dkim-2026-12-06.md).
    private struct FieldWriter {
        /// The DKIM-Signature field up to `b=`.
        var template: [UInt8] = []
        /// The canonical signed fields, then the canonical signature field: the header hash input.
        var scratch: [UInt8] = []
        /// Which fields are signed already (bottom-up, §5.4.2).
        var used: [Bool] = []
        var lineLength = 0
        var first = true

        mutating func append(_ text: String) {
            template.append(contentsOf: text.utf8)
        }

        mutating func append(_ byte: UInt8) {
            template.append(byte)
        }

        mutating func appendDecimal(_ value: Int64) {
            if value < 0 { template.append(UInt8(ascii: "-")) }
            var v = value.magnitude
            let start = template.count
            repeat {
                template.append(UInt8(ascii: "0") + UInt8(v % 10))
                v /= 10
            } while v > 0
            // Reversed in place by index: reversing the slice `template[start...]` copies the buffer.
            var a = start, b = template.count - 1
            while a < b {
                template.swapAt(a, b)
                a += 1
                b -= 1
            }
        }

        /// Adds every not yet signed field called `name` (bottom-up) to the
        /// header hash input and its name to `h=`.
        mutating func signFields(named name: String, _ fields: DKIMHeaderFields, _ message: UnsafeRawBufferPointer,
                                 _ c: DKIMCanonicalizations) {
            while let index = lastUnused(named: name, fields, in: message) {
                used[index] = true
                let f = fields.fields[index]
                DKIMHeaderCanonicalizer.append(field: message, name: f.name, value: f.value, fullEnd: f.range.upperBound,
                                               c.header, includeLineEnd: true, into: &scratch)
                if !first {
                    template.append(UInt8(ascii: ":"))
                    lineLength += 1
                }
                let count = name.utf8.count
                if lineLength + count > 70 {
                    append("\r\n\t")
                    lineLength = 1
                }
                // h= lists names in lower case.
                for b in name.utf8 { template.append(DKIMHeaderFields.lower(b)) }
                lineLength += count
                first = false
            }
        }

        private func lastUnused(named name: String, _ fields: DKIMHeaderFields, in message: UnsafeRawBufferPointer) -> Int? {
            // The name's length and first byte once, then per field two integer
            // compares before any byte loop: 30 names × every field per message.
            let count = name.utf8.count
            guard let head = name.utf8.first.map(DKIMHeaderFields.lower) else { return nil }
            var i = fields.fields.count - 1
            while i >= 0 {
                let f = fields.fields[i]
                if !used[i] && f.name.count >= count && DKIMHeaderFields.lower(message[f.name.lowerBound]) == head
                    && DKIMHeaderFields.name(f, in: message, equals: name) {
                    return i
                }
                i -= 1
            }
            return nil
        }
    }

    private func signOne(_ message: UnsafeRawBufferPointer, _ identity: DKIMSigningIdentity, body: BodyHash,
                         now: Int64, into out: inout [UInt8]) throws(DKIMError) {
        let c = identity.canonicalization
        guard fields.fields.contains(where: { DKIMHeaderFields.name($0, in: message, equals: Self.from) }) else {
            throw DKIMError("message has no From field")
        }
        // Moved out of the class for the signature and back after (no copy: the
        // buffers are not shared), so every append below is on a local.
        var w = writer
        writer = FieldWriter()
        defer { writer = w }
        w.used.removeAll(keepingCapacity: true)
        w.used.append(contentsOf: repeatElement(false, count: fields.fields.count))
        w.scratch.removeAll(keepingCapacity: true)
        w.template.removeAll(keepingCapacity: true)
        w.append("DKIM-Signature: v=1; a=")
        w.append(identity.key.algorithm.tag)
        w.append("; c=")
        w.append(c.header.rawValue)
        w.append(UInt8(ascii: "/"))
        w.append(c.body.rawValue)
        w.append("; d=")
        w.append(identity.domain)
        w.append("; s=")
        w.append(identity.selector)
        w.append(";\r\n\tt=")
        w.appendDecimal(now)
        w.append(UInt8(ascii: ";"))
        if let expire = identity.expireAfterSeconds {
            w.append(" x=")
            w.appendDecimal(now + expire)
            w.append(UInt8(ascii: ";"))
        }
        if identity.bodyLengthLimit {
            w.append(" l=")
            w.appendDecimal(Int64(body.length))
            w.append(UInt8(ascii: ";"))
        }
        if let auid = identity.agentIdentifier {
            w.append("\r\n\ti=")
            w.append(auid)
            w.append(UInt8(ascii: ";"))
        }
        w.append("\r\n\th=")
        w.lineLength = 3
        w.first = true
        // From is always signed: first, when the configured list lacks it.
        let listHasFrom = identity.headers.contains { DKIMHeaderFields.equalsIgnoringCase($0, Self.from) }
        if !listHasFrom { w.signFields(named: "from", fields, message, c) }
        for name in identity.headers { w.signFields(named: name, fields, message, c) }
        guard !w.first else { throw DKIMError("message has no From field") }
        w.append(";\r\n\tbh=")
        body.digest.withUnsafeBytes { Base64.encode($0, into: &w.template) }
        w.append(";\r\n\tb=")
        // The signature field itself, b= empty and without its final CRLF (§3.7).
        w.template.withUnsafeBytes { t in
            let colon = 14 // "DKIM-Signature" is 14 bytes
            DKIMHeaderCanonicalizer.append(field: t, name: 0..<colon, value: colon + 1..<t.count, fullEnd: t.count,
                                           c.header, includeLineEnd: false, into: &w.scratch)
        }
        headerHash.reset()
        w.scratch.withUnsafeBytes { headerHash.update($0) }
        headerDigest.withUnsafeMutableBytes { headerHash.finish(into: $0) }
        let length = try rawSign(with: identity.key)
        out.append(contentsOf: w.template)
        // b= folded at 72 columns so no line exceeds 78 (RFC 5322 §2.1.1).
        encoded.removeAll(keepingCapacity: true)
        signature.withUnsafeBytes { raw in
            Base64.encode(UnsafeRawBufferPointer(rebasing: raw[0..<length]), into: &encoded)
        }
        encoded.withUnsafeBufferPointer { e in
            var i = 0
            while i < e.count {
                if i > 0 { out.append(13); out.append(10); out.append(9) }
                let end = min(i + 72, e.count)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: e[i..<end]))
                i = end
            }
        }
        out.append(13)
        out.append(10)
    }

    private static let from = "from"

    /// RSA: PKCS#1 v1.5 over the SHA-256 digest. Ed25519 (RFC 8463 §3): pure
    /// Ed25519 over the 32-byte SHA-256 digest.
    private func rawSign(with key: DKIMPrivateKey) throws(DKIMError) -> Int {
        let ctx = try context(for: key)
        var length = signature.count
        let ok: Int32 = signature.withUnsafeMutableBufferPointer { sig in
            headerDigest.withUnsafeBufferPointer { d in
                if let p = ctx.pkeyCtx {
                    return EVP_PKEY_sign(p, sig.baseAddress, &length, d.baseAddress, d.count)
                }
                guard let md = ctx.mdCtx, let prepared = ctx.preparedMdCtx else { return 0 }
                // A failed copy (an OpenSSL without context duplication) falls back to a fresh init.
                guard EVP_MD_CTX_copy_ex(md, prepared) == 1 || EVP_DigestSignInit(md, nil, nil, nil, key.pkey) == 1 else { return 0 }
                return EVP_DigestSign(md, sig.baseAddress, &length, d.baseAddress, d.count)
            }
        }
        guard ok == 1 else { throw DKIMError("signing failed: \(openSSLErrorText())") }
        return length
    }
}

// MARK: - The parts of a signature, one at a time (`peregrine-bench dkim-sign`)

extension DKIMSigner {
    /// The private-key operation alone, exactly as `sign` performs it (the
    /// same per-key context, copied per call for Ed25519), over a 32-byte
    /// digest: the in-process reference for `openssl speed`. Returns the
    /// signature's length.
    public func rawSignature(ofDigest digest: [UInt8], with key: DKIMPrivateKey) throws(DKIMError) -> Int {
        precondition(digest.count == 32)
        headerDigest.withUnsafeMutableBytes { $0.copyBytes(from: digest) }
        return try rawSign(with: key)
    }

    /// The body hash alone (`bh=`, canonicalisation and SHA-256) of the body of
    /// `message`, as `sign` computes it; the digest is written to `digest` (32 bytes).
    public func bodyHash(message: UnsafeRawBufferPointer, _ c: DKIMCanonicalization,
                         into digest: UnsafeMutableRawBufferPointer) {
        fields.parse(message)
        relaxedBody.valid = false
        simpleBody.valid = false
        hashBody(message, c)
        (c == .relaxed ? relaxedBody : simpleBody).digest.withUnsafeBytes { digest.copyMemory(from: $0) }
    }
}
