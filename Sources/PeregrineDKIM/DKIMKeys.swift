#if canImport(Glibc)
import PeregrineIO
import Glibc
#endif
import COpenSSL

/// A private signing key, loaded once (config load or reload) and shared by
/// every loop: an `EVP_PKEY` is safe for concurrent use when each thread signs
/// through its own context (`DKIMSigner` keeps one per key).
public final class DKIMPrivateKey: @unchecked Sendable {
    public let algorithm: DKIMAlgorithm
    /// Key size in bits (RSA: the modulus; Ed25519: 253).
    public let bits: Int
    let pkey: OpaquePointer

    private init(pkey: OpaquePointer, algorithm: DKIMAlgorithm, bits: Int) {
        self.pkey = pkey
        self.algorithm = algorithm
        self.bits = bits
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Reads a PEM private key (PKCS#8 or traditional RSA) from `path`.
    public static func load(path: String) throws(DKIMError) -> DKIMPrivateKey {
        guard let file = fopen(path, "r") else {
            throw DKIMError("cannot read key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 4096, file) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < 4096 { break }
            if bytes.count > 1 << 20 { throw DKIMError("key file \(path) is larger than 1 MB: not a private key") }
        }
        if ferror(file) != 0 { throw DKIMError("cannot read key file \(path): read error") }
        do {
            return try DKIMPrivateKey(pem: bytes)
        } catch {
            throw DKIMError("key file \(path): \(error.description)")
        }
    }

    /// A PEM private key. RSA keys must be 1024 to 4096 bits (RFC 8301 forbids
    /// smaller; larger ones do not fit a DNS TXT record sensibly).
    public convenience init(pem: [UInt8]) throws(DKIMError) {
        ERR_clear_error()
        let parsed: OpaquePointer? = pem.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let pkey = parsed else {
            throw DKIMError("not a PEM private key (\(openSSLErrorText()))")
        }
        let bits = Int(EVP_PKEY_get_bits(pkey))
        switch EVP_PKEY_get_base_id(pkey) {
        case EVP_PKEY_RSA:
            guard (1024...4096).contains(bits) else {
                EVP_PKEY_free(pkey)
                throw DKIMError("RSA key of \(bits) bits: DKIM needs 1024 to 4096 bits")
            }
            self.init(pkey: pkey, algorithm: .rsaSHA256, bits: bits)
        case EVP_PKEY_ED25519:
            self.init(pkey: pkey, algorithm: .ed25519SHA256, bits: bits)
        default:
            EVP_PKEY_free(pkey)
            throw DKIMError("key type is neither RSA nor Ed25519")
        }
    }

    /// The `p=` value to publish in DNS: base64 of the SubjectPublicKeyInfo
    /// (RSA) or of the raw 32-byte public key (Ed25519, RFC 8463 §4.2).
    public var publicKeyRecordValue: String {
        switch algorithm {
        case .rsaSHA256:
            var out: UnsafeMutablePointer<UInt8>?
            let n = i2d_PUBKEY(pkey, &out)
            guard n > 0, let out else { return "" }
            defer { CRYPTO_free(out, #file, #line) }
            return Base64.encode(Array(UnsafeBufferPointer(start: out, count: Int(n))))
        case .ed25519SHA256:
            var raw = [UInt8](repeating: 0, count: 32)
            var length = 32
            guard EVP_PKEY_get_raw_public_key(pkey, &raw, &length) == 1 else { return "" }
            return Base64.encode(Array(raw[0..<length]))
        }
    }

    /// The DNS TXT record for this key: `v=DKIM1; k=rsa|ed25519; p=…`.
    public var dnsRecord: String {
        "v=DKIM1; k=\(algorithm == .rsaSHA256 ? "rsa" : "ed25519"); p=\(publicKeyRecordValue)"
    }
}

/// A verification key: from the DNS TXT record text (`v=DKIM1; k=…; p=…`)
/// or from a PEM public key. Immutable; safe to share between threads.
public final class DKIMPublicKey: @unchecked Sendable {
    public let algorithm: DKIMAlgorithm
    let pkey: OpaquePointer

    private init(pkey: OpaquePointer, algorithm: DKIMAlgorithm) {
        self.pkey = pkey
        self.algorithm = algorithm
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Parses a key record (RFC 6376 §3.6.1). `k=` defaults to rsa; an empty `p=` (revoked) is an error.
    public convenience init(dnsRecord: String) throws(DKIMError) {
        var kind = "rsa"
        var p: String?
        for tag in dnsRecord.split(separator: ";") {
            let parts = tag.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let name = parts[0].trimmingWhitespace()
            let value = parts[1].trimmingWhitespace()
            switch name {
            case "k": kind = value.lowercased()
            case "p": p = value
            case "v": if value != "DKIM1" { throw DKIMError("key record v=\(value) is not DKIM1") }
            default: break
            }
        }
        guard let p, !p.isEmpty else { throw DKIMError("key record has no p= (revoked or malformed)") }
        guard let der = Base64.decode(p.utf8, rules: .folded) else { throw DKIMError("key record p= is not base64") }
        switch kind {
        case "rsa":
            let key: OpaquePointer? = der.withUnsafeBufferPointer { buf in
                var cursor: UnsafePointer<UInt8>? = buf.baseAddress
                return d2i_PUBKEY(nil, &cursor, buf.count)
            }
            guard let key, EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA else {
                throw DKIMError("key record p= is not an RSA public key")
            }
            self.init(pkey: key, algorithm: .rsaSHA256)
        case "ed25519":
            guard der.count == 32,
                  let key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, der, 32) else {
                throw DKIMError("key record p= is not a 32-byte Ed25519 public key")
            }
            self.init(pkey: key, algorithm: .ed25519SHA256)
        default:
            throw DKIMError("key record k=\(kind) is not supported")
        }
    }

    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo), RSA or Ed25519.
    public convenience init(pem: [UInt8]) throws(DKIMError) {
        ERR_clear_error()
        let parsed: OpaquePointer? = pem.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        guard let key = parsed else { throw DKIMError("not a PEM public key (\(openSSLErrorText()))") }
        switch EVP_PKEY_get_base_id(key) {
        case EVP_PKEY_RSA: self.init(pkey: key, algorithm: .rsaSHA256)
        case EVP_PKEY_ED25519: self.init(pkey: key, algorithm: .ed25519SHA256)
        default:
            EVP_PKEY_free(key)
            throw DKIMError("public key type is neither RSA nor Ed25519")
        }
    }

    /// A key file: a PEM public key, or the text of the DNS TXT record.
    public static func load(path: String) throws(DKIMError) -> DKIMPublicKey {
        guard let file = fopen(path, "r") else {
            throw DKIMError("cannot read key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 4096, file) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < 4096 { break }
        }
        do {
            if bytes.starts(with: Array("-----BEGIN".utf8)) { return try DKIMPublicKey(pem: bytes) }
            // A TXT record may be split into quoted strings; join them.
            let text = String(decoding: bytes.filter { $0 != UInt8(ascii: "\"") && $0 != 10 && $0 != 13 }, as: UTF8.self)
            return try DKIMPublicKey(dnsRecord: text)
        } catch {
            throw DKIMError("key file \(path): \(error.description)")
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}

/// The first queued OpenSSL error, as text (or "unknown error").
func openSSLErrorText() -> String {
    let code = ERR_get_error()
    guard code != 0 else { return "unknown error" }
    var buffer = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buffer, buffer.count)
    ERR_clear_error()
    return String(cString: buffer)
}
