import CDKIMScan
#if canImport(Glibc)
import Glibc
#endif

/// The body hash (`bh=`), computed as the body streams past: canonicalised
/// (RFC 6376 §3.4.3 simple, §3.4.4 relaxed) on the fly, so a 100 KB body is
/// hashed without a canonical copy. Trailing empty lines are held back as a
/// count and written only when content follows them. Line ends are CRLF; a
/// CR not followed by LF is content.
///
/// The body is scanned in runs, not byte by byte: everything up to the next
/// CR (simple), or the next CR, tab or space that is not a lone space between
/// two content bytes (relaxed, where such a space is already canonical), is
/// hashed as one piece. Only line ends and whitespace runs take the slow path
/// (a profile of the per-byte version: issue 18, results/profile-dkim-*.md).
/// Relaxed runs are found sixteen bytes per step (SSE2, CDKIMScan), then
/// eight, then one.
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
    /// Staging so that OpenSSL sees few large updates rather than one per run.
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

    /// Hashes `count` canonical bytes at `start` (as many as the limit allows).
    @inline(__always)
    private func emit(_ start: UnsafePointer<UInt8>, _ count: Int) {
        let hashed = min(count, max(0, limit - canonicalLength))
        canonicalLength += count
        guard hashed > 0 else { return }
        if staged + hashed > staging.count {
            flush()
            if hashed >= staging.count {
                sha.update(UnsafeRawBufferPointer(start: start, count: hashed))
                return
            }
        }
        (staging.baseAddress! + staged).copyMemory(from: start, byteCount: hashed)
        staged += hashed
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

    /// Content follows: the held-back empty lines and whitespace go first.
    @inline(__always)
    private func beforeContent() {
        if pendingEmptyLines > 0 { emitPendingLines() }
        if pendingWhitespace {
            emit(32)
            pendingWhitespace = false
        }
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
        guard let raw = bytes.baseAddress, bytes.count > 0 else { return }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let n = bytes.count
        let relaxed = canonicalization == .relaxed
        var i = 0
        while i < n {
            let b = p[i]
            if pendingCR {
                pendingCR = false
                if b == 10 { endOfLine(); i += 1; continue }
                beforeContent()
                emit(13) // a bare CR is content; `b` is looked at again below
            }
            if b == 13 { pendingCR = true; i += 1; continue }
            if relaxed && (b == 32 || b == 9) { pendingWhitespace = true; i += 1; continue }
            // A run of content bytes from i to j.
            var j = i + 1
            if relaxed {
                // Sixteen bytes at a time (SSE2, CDKIMScan), then the word and byte loops finish the run.
                j += peregrine_dkim_relaxed_run(p + j, n - j)
                // Eight bytes at a time while they hold no CR, no tab and no space
                // followed by whitespace or CR (`w1` is the same bytes shifted by one).
                // A false alarm only sends the word to the byte loop below.
                while j + 9 <= n {
                    let w = UnsafeRawPointer(p + j).loadUnaligned(as: UInt64.self)
                    let w1 = UnsafeRawPointer(p + j + 1).loadUnaligned(as: UInt64.self)
                    let stop = Self.has(w, 13) | Self.has(w, 9)
                        | (Self.has(w, 32) & (Self.has(w1, 32) | Self.has(w1, 9) | Self.has(w1, 13)))
                    if stop != 0 { break }
                    j += 8
                }
                while j < n {
                    let c = p[j]
                    if c == 13 || c == 9 { break }
                    if c == 32 {
                        // A lone space followed by content is its own canonical form.
                        guard j + 1 < n else { break }
                        let d = p[j + 1]
                        if d == 32 || d == 9 || d == 13 { break }
                        j += 2
                        continue
                    }
                    j += 1
                }
            } else if let cr = memchr(p + j, 13, n - j) {
                j = UnsafePointer(cr.assumingMemoryBound(to: UInt8.self)) - p
            } else {
                j = n
            }
            beforeContent()
            emit(p + i, j - i)
            i = j
        }
    }

    /// The high bit of every byte of `w` that equals `byte` is set (and
    /// perhaps of some bytes above one that does: never a miss, only false alarms).
    @inline(__always)
    private static func has(_ w: UInt64, _ byte: UInt8) -> UInt64 {
        let x = w ^ (0x0101_0101_0101_0101 &* UInt64(byte))
        return (x &- 0x0101_0101_0101_0101) & ~x & 0x8080_8080_8080_8080
    }

    /// Writes the digest of the canonical body into `digest` (32 bytes);
    /// trailing empty lines are dropped, a last line without CRLF gets one,
    /// and an empty simple body is CRLF.
    func finish(into digest: UnsafeMutableRawBufferPointer) {
        if pendingCR { pendingCR = false; beforeContent(); emit(13) }
        if lineHasContent { endOfLine() }
        if canonicalization == .simple && canonicalLength == 0 { emit(13); emit(10) }
        flush()
        sha.finish(into: digest)
    }

    /// The digest as an array (tests and the verifier; the signer uses `finish(into:)`).
    func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBytes { finish(into: $0) }
        return digest
    }
}
