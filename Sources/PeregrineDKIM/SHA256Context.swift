import COpenSSL

/// One reusable SHA-256 context (`EVP_MD_CTX`): created once, reset per
/// message, so hashing allocates nothing per message. Not thread-safe: one
/// per signer or verifier.
final class SHA256Context {
    private let ctx: OpaquePointer

    init() {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new: out of memory") }
        self.ctx = ctx
        reset()
    }

    deinit { EVP_MD_CTX_free(ctx) }

    func reset() {
        // Fails only when OpenSSL cannot provide SHA-256 at all: a broken installation.
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else { fatalError("EVP_DigestInit_ex(sha256) failed") }
    }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(ctx, base, bytes.count)
    }

    func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Writes the 32-byte digest into `digest`; the context is reset for the next message.
    func finish(into digest: UnsafeMutableRawBufferPointer) {
        precondition(digest.count >= 32)
        var length: UInt32 = 0
        _ = EVP_DigestFinal_ex(ctx, digest.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
        reset()
    }

    /// The 32-byte digest; the context is reset for the next message.
    func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        digest.withUnsafeMutableBytes { _ = EVP_DigestFinal_ex(ctx, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), &length) }
        reset()
        return digest
    }
}
