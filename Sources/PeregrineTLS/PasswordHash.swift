#if canImport(Glibc)
import PeregrineIO
import Glibc
#endif
import COpenSSL

/// Password hashes for `<smtp-user>` (`password-hash`), PBKDF2-HMAC-SHA256
/// through OpenSSL, written as
///
///     $pbkdf2-sha256$ITERATIONS$SALT$HASH
///
/// with SALT (16 random bytes) and HASH (32 bytes) in standard base64
/// without `=` padding: the layout passlib and Dovecot's tooling read.
/// PBKDF2 rather than scrypt: FIPS-approved, in every OpenSSL, and its cost
/// is a single number an operator can raise. The default iteration count is
/// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
public struct PasswordHash: Hashable, Sendable {
    public static let scheme = "pbkdf2-sha256"
    public static let defaultIterations = 600_000
    /// Below this a hash is refused at load: it would be cheap to brute-force offline.
    public static let minimumIterations = 100_000
    public static let maximumIterations = 100_000_000
    public static let saltLength = 16
    public static let hashLength = 32

    public let iterations: Int
    public let salt: [UInt8]
    public let hash: [UInt8]

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        public var description: String { if case .malformed(let m) = self { return m }; return "" }
    }

    /// Parses `$pbkdf2-sha256$N$salt$hash`.
    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0].isEmpty else {
            throw .malformed("expected $\(Self.scheme)$ITERATIONS$SALT$HASH (as printed by 'peregrine passwd')")
        }
        guard parts[1] == Self.scheme else {
            throw .malformed("unknown hash scheme '\(parts[1])' (only \(Self.scheme) is supported)")
        }
        guard let n = Int(parts[2]), (Self.minimumIterations...Self.maximumIterations).contains(n) else {
            throw .malformed("iteration count '\(parts[2])' is not between \(Self.minimumIterations) and \(Self.maximumIterations)")
        }
        guard let salt = Self.decodeUnpadded(parts[3]), salt.count >= 8 else {
            throw .malformed("the salt is not base64 of at least 8 bytes")
        }
        guard let hash = Self.decodeUnpadded(parts[4]), hash.count == Self.hashLength else {
            throw .malformed("the hash is not base64 of \(Self.hashLength) bytes")
        }
        self.iterations = n; self.salt = salt; self.hash = hash
    }

    public init(iterations: Int, salt: [UInt8], hash: [UInt8]) {
        self.iterations = iterations; self.salt = salt; self.hash = hash
    }

    /// Hashes `password` with a fresh random salt (what `peregrine passwd` prints).
    public static func make(password: [UInt8], iterations: Int = defaultIterations) -> PasswordHash? {
        guard let salt = randomBytes(saltLength) else { return nil }
        guard let hash = derive(password, salt: salt, iterations: iterations) else { return nil }
        return PasswordHash(iterations: iterations, salt: salt, hash: hash)
    }

    /// The directive value.
    public var encoded: String {
        "$\(Self.scheme)$\(iterations)$\(Self.encodeUnpadded(salt))$\(Self.encodeUnpadded(hash))"
    }

    /// True when `password` hashes to this. Costs `iterations` HMACs: call it off the event loop.
    /// The comparison takes the same time wherever the bytes differ.
    public func matches(_ password: [UInt8]) -> Bool {
        guard let candidate = Self.derive(password, salt: salt, iterations: iterations) else { return false }
        return constantTimeEqual(candidate, hash)
    }

    static func derive(_ password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: hashLength)
        let ok = password.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { pc in
                PKCS5_PBKDF2_HMAC(pc.baseAddress, Int32(pc.count), salt, Int32(salt.count), Int32(iterations),
                                  EVP_sha256(), Int32(hashLength), &out)
            }
        }
        return ok == 1 ? out : nil
    }

    static func encodeUnpadded(_ bytes: [UInt8]) -> String { Base64.encode(bytes, padded: false) }

    static func decodeUnpadded(_ text: Substring) -> [UInt8]? { Base64.decode(text.utf8, rules: .unpadded) }
}

/// SHA-256 of `bytes` (OpenSSL's EVP one-shot).
public func sha256(_ bytes: [UInt8]) -> [UInt8] {
    var md = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    _ = bytes.withUnsafeBytes { b in EVP_Digest(b.baseAddress, b.count, &md, &length, EVP_sha256(), nil) }
    return md
}

/// `a == b` in time that depends only on the lengths (OpenSSL's CRYPTO_memcmp).
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 } }
}

/// `count` bytes from the kernel's CSPRNG (/dev/urandom), nil if it cannot be read.
public func randomBytes(_ count: Int) -> [UInt8]? {
    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, count - filled) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return nil }
        filled += n
    }
    return out
}
