import PeregrineIO
import COpenSSL

/// The outcome of checking one DKIM-Signature field.
public struct DKIMVerificationResult: Sendable, Equatable, CustomStringConvertible {
    public enum Status: String, Sendable, Equatable {
        /// The signature verifies.
        case pass
        /// Well-formed, but the body hash or signature does not match, or it expired.
        case fail
        /// Malformed or unusable (RFC 6376 §6.1.1: PERMFAIL).
        case permerror
        /// No key for d=/s= was supplied.
        case noKey = "nokey"
    }

    public var status: Status
    public var reason: String
    /// `d=` and `s=` as written (empty when missing).
    public var domain: String
    public var selector: String
    /// The `h=` field names, lower-cased (for "is this field signed").
    public var signedFields: [String] = []

    public var description: String { "\(status.rawValue) d=\(domain) s=\(selector)\(reason.isEmpty ? "" : ": \(reason)")" }
}

/// Checks every DKIM-Signature field of a message against keys the caller
/// supplies (no DNS: tests and the sink know their keys). Not thread-safe;
/// one per connection or thread.
public final class DKIMVerifier {
    private let bodyHasher = DKIMBodyHasher()
    private let headerHash = SHA256Context()
    private var fields = DKIMHeaderFields()

    public init() {}

    /// One result per DKIM-Signature field, top to bottom. `now` (Unix
    /// seconds) is checked against `x=`; nil skips the expiry check.
    public func verify(message: UnsafeRawBufferPointer, now: Int64?,
                       key: (_ domain: String, _ selector: String) -> DKIMPublicKey?) -> [DKIMVerificationResult] {
        fields.parse(message)
        let signatureName = Array("dkim-signature".utf8)
        var results: [DKIMVerificationResult] = []
        for field in fields.fields where DKIMHeaderFields.name(field, in: message, equals: signatureName) {
            results.append(verifyOne(field, message, now: now, key: key))
        }
        return results
    }

    public func verify(message: [UInt8], now: Int64?,
                       key: (_ domain: String, _ selector: String) -> DKIMPublicKey?) -> [DKIMVerificationResult] {
        message.withUnsafeBytes { verify(message: $0, now: now, key: key) }
    }

    private struct Tag {
        var name: String
        var value: String
        /// Bytes of the value in the message (for b=, removed before hashing).
        var valueRange: Range<Int>
    }

    private func parseTags(_ field: DKIMHeaderFields.Field, _ message: UnsafeRawBufferPointer) -> [Tag]? {
        var tags: [Tag] = []
        var start = field.value.lowerBound
        let end = field.value.upperBound
        while start < end {
            var stop = start
            while stop < end && message[stop] != UInt8(ascii: ";") { stop += 1 }
            var eq = start
            while eq < stop && message[eq] != UInt8(ascii: "=") { eq += 1 }
            let nameText = Self.text(message, start..<eq).trimmingFWS()
            if eq == stop {
                // Only whitespace may follow the last ';'.
                if !nameText.isEmpty { return nil }
            } else {
                if nameText.isEmpty { return nil }
                tags.append(Tag(name: nameText, value: Self.text(message, eq + 1..<stop).trimmingFWS(), valueRange: eq + 1..<stop))
            }
            start = stop + 1
        }
        return tags
    }

    private static func text(_ m: UnsafeRawBufferPointer, _ r: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: m[r]), as: UTF8.self)
    }

    private func verifyOne(_ field: DKIMHeaderFields.Field, _ message: UnsafeRawBufferPointer, now: Int64?,
                           key lookup: (String, String) -> DKIMPublicKey?) -> DKIMVerificationResult {
        var result = DKIMVerificationResult(status: .permerror, reason: "", domain: "", selector: "")
        guard let tags = parseTags(field, message) else { result.reason = "malformed tag list"; return result }
        func tag(_ name: String) -> Tag? { tags.first { $0.name == name } }
        if Set(tags.map(\.name)).count != tags.count { result.reason = "duplicate tag"; return result }
        result.domain = tag("d")?.value ?? ""
        result.selector = tag("s")?.value ?? ""
        guard tag("v")?.value == "1" else { result.reason = "v= is not 1"; return result }
        guard let a = tag("a"), let algorithm = DKIMAlgorithm(tag: a.value) else { result.reason = "unknown a="; return result }
        let canon = tag("c").map { DKIMCanonicalizations(tag: $0.value.filter { !$0.isWhitespace }) }
            ?? DKIMCanonicalizations(header: .simple, body: .simple)
        guard let canon else { result.reason = "unknown c="; return result }
        guard !result.domain.isEmpty, !result.selector.isEmpty else { result.reason = "missing d= or s="; return result }
        guard let h = tag("h") else { result.reason = "missing h="; return result }
        let signedNames = h.value.split(separator: ":").map { $0.trimmingFWS().lowercased() }
        result.signedFields = signedNames
        guard signedNames.contains("from") else { result.reason = "h= does not include from"; return result }
        guard let bhTag = tag("bh"), let bh = Base64.decode(bhTag.value.utf8, rules: .folded) else { result.reason = "missing or bad bh="; return result }
        guard let bTag = tag("b"), let b = Base64.decode(bTag.value.utf8, rules: .folded), !b.isEmpty else {
            result.reason = "missing or bad b="; return result
        }
        var limit: Int?
        if let l = tag("l") {
            guard let n = Int(l.value), n >= 0 else { result.reason = "bad l="; return result }
            limit = n
        }
        if let x = tag("x") {
            guard let expiry = Int64(x.value) else { result.reason = "bad x="; return result }
            if let t = tag("t"), let signed = Int64(t.value), signed > expiry { result.reason = "t= after x="; return result }
            if let now, now > expiry {
                result.status = .fail
                result.reason = "signature expired"
                return result
            }
        }
        guard let publicKey = lookup(result.domain.lowercased(), result.selector) else {
            result.status = .noKey
            result.reason = "no key for \(result.selector)._domainkey.\(result.domain)"
            return result
        }
        guard publicKey.algorithm == algorithm else { result.reason = "key type does not match a="; return result }

        // Body.
        bodyHasher.reset(canon.body, limit: limit)
        bodyHasher.update(UnsafeRawBufferPointer(rebasing: message[fields.bodyStart..<message.count]))
        let computed = bodyHasher.finish()
        if let limit, limit > bodyHasher.canonicalLength {
            result.status = .fail
            result.reason = "l= is longer than the body"
            return result
        }
        guard computed == bh else {
            result.status = .fail
            result.reason = "body hash mismatch"
            return result
        }

        // Header fields named by h=, bottom-up, then this field without the b= value.
        var used = [Bool](repeating: false, count: fields.fields.count)
        var canonical: [UInt8] = []
        for name in signedNames {
            let nameBytes = Array(name.utf8)
            var i = fields.fields.count - 1
            while i >= 0 {
                if !used[i] && DKIMHeaderFields.name(fields.fields[i], in: message, equals: nameBytes) { break }
                i -= 1
            }
            guard i >= 0 else { continue } // a name with no (more) fields signs their absence
            used[i] = true
            let f = fields.fields[i]
            DKIMHeaderCanonicalizer.append(field: message, name: f.name, value: f.value, fullEnd: f.range.upperBound,
                                           canon.header, includeLineEnd: true, into: &canonical)
        }
        var stripped: [UInt8] = []
        stripped.append(contentsOf: UnsafeRawBufferPointer(rebasing: message[field.range.lowerBound..<bTag.valueRange.lowerBound]))
        stripped.append(contentsOf: UnsafeRawBufferPointer(rebasing: message[bTag.valueRange.upperBound..<field.value.upperBound]))
        let nameLength = field.name.count
        stripped.withUnsafeBytes { s in
            DKIMHeaderCanonicalizer.append(field: s, name: 0..<nameLength, value: nameLength + 1..<s.count, fullEnd: s.count,
                                           canon.header, includeLineEnd: false, into: &canonical)
        }
        headerHash.reset()
        headerHash.update(canonical)
        let digest = headerHash.finish()
        if Self.check(signature: b, digest: digest, key: publicKey) {
            result.status = .pass
        } else {
            result.status = .fail
            result.reason = "signature does not verify"
        }
        return result
    }

    private static func check(signature: [UInt8], digest: [UInt8], key: DKIMPublicKey) -> Bool {
        defer { ERR_clear_error() }
        switch key.algorithm {
        case .rsaSHA256:
            guard let ctx = EVP_PKEY_CTX_new(key.pkey, nil) else { return false }
            defer { EVP_PKEY_CTX_free(ctx) }
            guard EVP_PKEY_verify_init(ctx) == 1,
                  EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1,
                  EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 else { return false }
            return EVP_PKEY_verify(ctx, signature, signature.count, digest, digest.count) == 1
        case .ed25519SHA256:
            guard let md = EVP_MD_CTX_new() else { return false }
            defer { EVP_MD_CTX_free(md) }
            guard EVP_DigestVerifyInit(md, nil, nil, nil, key.pkey) == 1 else { return false }
            return EVP_DigestVerify(md, signature, signature.count, digest, digest.count) == 1
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing folding whitespace.
    func trimmingFWS() -> String {
        let bytes = Array(self.utf8)
        var s = 0, e = bytes.count
        while s < e && (bytes[s] == 32 || bytes[s] == 9 || bytes[s] == 13 || bytes[s] == 10) { s += 1 }
        while e > s && (bytes[e - 1] == 32 || bytes[e - 1] == 9 || bytes[e - 1] == 13 || bytes[e - 1] == 10) { e -= 1 }
        return String(decoding: bytes[s..<e], as: UTF8.self)
    }
}
