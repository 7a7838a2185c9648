import COpenSSL

/// One reusable SHA-256 context (`EVP_MD_CTX`): created once, reset per
/// message, so hashing allocates nothing per message. Not thread-safe: one
/// per signer or verifier.
final class SHA256Context {
    private let ctx: OpaquePointer
    /// Set by `finish`: the next `update` or `finish` re-initialises first.
    /// A caller that calls `reset` before each message (the signer, the
    /// verifier) then pays one initialisation per message, not two.
    private var finished = false

    /// SHA-256 fetched from the default provider once per process. Passing
    /// the legacy `EVP_sha256()` to `EVP_DigestInit_ex` makes OpenSSL 3 fetch
    /// the implementation again on every init (a locked method-store lookup:
    /// `EVP_MD_fetch`, `OPENSSL_LH_retrieve`, rwlock), which the profile of
    /// the signer showed per message (results/profile-dkim-2026-12-06.md).
    private static let sha256: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil) ?? EVP_sha256()

    init() {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new: out of memory") }
        self.ctx = ctx
        reset()
    }

    deinit { EVP_MD_CTX_free(ctx) }

    func reset() {
        // Fails only when OpenSSL cannot provide SHA-256 at all: a broken installation.
        guard EVP_DigestInit_ex(ctx, Self.sha256, nil) == 1 else { fatalError("EVP_DigestInit_ex(sha256) failed") }
        finished = false
    }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if finished { reset() }
        EVP_DigestUpdate(ctx, base, bytes.count)
    }

    func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Writes the 32-byte digest into `digest`; the next message starts afresh
    /// (with or without a `reset` first).
    func finish(into digest: UnsafeMutableRawBufferPointer) {
        precondition(digest.count >= 32)
        if finished { reset() }
        var length: UInt32 = 0
        _ = EVP_DigestFinal_ex(ctx, digest.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
        finished = true
    }

    /// The 32-byte digest; the next message starts afresh.
    func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBytes { finish(into: $0) }
        return digest
    }
}
