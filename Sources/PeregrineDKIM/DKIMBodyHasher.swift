/// The body hash (`bh=`), computed as the body streams past: canonicalised
/// (RFC 6376 §3.4.3 simple, §3.4.4 relaxed) on the fly, so a 100 KB body is
/// hashed without a canonical copy. Trailing empty lines are held back as a
/// count and written only when content follows them. Line ends are CRLF; a
/// CR not followed by LF is content.
///
/// `limit` is the `l=` count: at most that many canonical bytes are hashed;
/// `canonicalLength` is how many the whole body has (the signer's `l=`).
/// Not thread-safe; reuse one per signer (`reset`).
final class DKIMBodyHasher {
    private let sha = SHA256Context()
    private var canonicalization: DKIMCanonicalization = .relaxed
    private var limit: Int = .max
    /// Canonical bytes produced so far (hashed or past the limit).
    private(set) var canonicalLength = 0
    private var pendingEmptyLines = 0
    private var pendingWhitespace = false
    private var pendingCR = false
    private var lineHasContent = false
    /// Staging so that OpenSSL sees few large updates rather than one per byte.
    private let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    private var staged = 0

    deinit { staging.deallocate() }

    func reset(_ canonicalization: DKIMCanonicalization, limit: Int? = nil) {
        self.canonicalization = canonicalization
        self.limit = limit ?? .max
        canonicalLength = 0
        pendingEmptyLines = 0
        pendingWhitespace = false
        pendingCR = false
        lineHasContent = false
        staged = 0
        sha.reset()
    }

    @inline(__always)
    private func emit(_ byte: UInt8) {
        if canonicalLength < limit {
            if staged == staging.count { flush() }
            staging[staged] = byte
            staged += 1
        }
        canonicalLength += 1
    }

    private func flush() {
        sha.update(UnsafeRawBufferPointer(rebasing: staging[0..<staged]))
        staged = 0
    }

    @inline(__always)
    private func emitPendingLines() {
        while pendingEmptyLines > 0 {
            emit(13); emit(10)
            pendingEmptyLines -= 1
        }
    }

    @inline(__always)
    private func content(_ byte: UInt8) {
        emitPendingLines()
        if pendingWhitespace {
            emit(32)
            pendingWhitespace = false
        }
        emit(byte)
        lineHasContent = true
    }

    @inline(__always)
    private func endOfLine() {
        pendingWhitespace = false // relaxed: whitespace at the end of a line is ignored
        if lineHasContent {
            emit(13); emit(10)
            lineHasContent = false
        } else {
            pendingEmptyLines += 1
        }
    }

    func update(_ bytes: UnsafeRawBufferPointer) {
        let relaxed = canonicalization == .relaxed
        for byte in bytes {
            if pendingCR {
                pendingCR = false
                if byte == 10 { endOfLine(); continue }
                content(13)
            }
            if byte == 13 { pendingCR = true; continue }
            if relaxed && (byte == 32 || byte == 9) { pendingWhitespace = true; continue }
            content(byte)
        }
    }

    /// The digest of the canonical body; trailing empty lines are dropped,
    /// a last line without CRLF gets one, and an empty simple body is CRLF.
    func finish() -> [UInt8] {
        if pendingCR { pendingCR = false; content(13) }
        if lineHasContent { endOfLine() }
        if canonicalization == .simple && canonicalLength == 0 { emit(13); emit(10) }
        flush()
        return sha.finish()
    }
}
