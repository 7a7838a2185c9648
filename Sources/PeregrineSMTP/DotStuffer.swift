#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PeregrineIO

/// Streaming DATA encoder for the client side: normalises line ends to CRLF
/// (bare LF and bare CR become CRLF), doubles a dot at the start of a line,
/// and finishes with "<CRLF>.<CRLF>" (adding the CRLF when the body does not
/// end with one).
///
/// The encoder writes into raw memory the caller owns (`stuff(_:into:)` with
/// an `UnsafeMutableRawBufferPointer`), so a connection can encode straight
/// into the buffer it hands to the socket; the `ByteBuffer` forms go through
/// the same code.
public struct DotStuffer: Sendable {
    private var atLineStart = true
    private var pendingCR = false

    public init() {}

    public mutating func reset() { atLineStart = true; pendingCR = false }

    /// The most bytes `stuff` can write for a chunk of `count` bytes: every
    /// byte may double (a dot at a line start, a bare LF or CR becoming CRLF),
    /// plus the CRLF of a CR held back from the previous chunk.
    public static func maxStuffedCount(_ count: Int) -> Int { 2 * count + 2 }

    /// True when `bytes` dot-stuff to themselves and leave the stuffer at a
    /// line start: whole CRLF lines only, none starting with a dot, no bare
    /// CR or LF (empty is true). For the few header lines an MTA adds above
    /// a body that is already its own wire form.
    public static func isOwnWireForm(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var atLineStart = true
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if atLineStart && b == UInt8(ascii: ".") { return false }
            atLineStart = false
            if b == 13 {
                guard i + 1 < n, bytes[i + 1] == 10 else { return false }
                i += 2
                atLineStart = true
                continue
            }
            if b == 10 { return false }
            i += 1
        }
        return atLineStart
    }

    /// The most bytes `finish` can write: a held-back or missing CRLF and ".\r\n".
    public static let maxFinishCount = 5

    /// Encodes `chunk` into `output` from its start; returns the bytes written.
    /// `output` must hold `maxStuffedCount(chunk.count)` bytes.
    public mutating func stuff(_ chunk: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
        let n = chunk.count
        guard n > 0, let src = chunk.baseAddress, let dst = output.baseAddress else { return 0 }
        precondition(output.count >= Self.maxStuffedCount(n), "DotStuffer: output smaller than maxStuffedCount")
        var o = 0
        var i = 0
        while i < n {
            let b = chunk[i]
            if pendingCR {
                // The CR held back is written as CRLF whatever follows; a following LF is part of it.
                pendingCR = false
                output[o] = 13; output[o + 1] = 10; o += 2
                atLineStart = true
                if b == 10 { i += 1; continue }
            }
            if b == 13 { pendingCR = true; i += 1; continue }
            if b == 10 {
                output[o] = 13; output[o + 1] = 10; o += 2   // bare LF -> CRLF
                atLineStart = true
                i += 1
                continue
            }
            if atLineStart && b == UInt8(ascii: ".") { output[o] = UInt8(ascii: "."); o += 1 }
            atLineStart = false
            // Copy the run up to the next CR/LF in one go. memchr (vectorised)
            // finds the LF; a CR is looked for only before it (usually right before).
            var j = n
            if let lf = memchr(src + i, 10, n - i) { j = UnsafeRawPointer(lf) - src }
            if let cr = memchr(src + i, 13, j - i) { j = UnsafeRawPointer(cr) - src }
            (dst + o).copyMemory(from: src + i, byteCount: j - i)
            o += j - i
            i = j
        }
        return o
    }

    /// Ends the message into `output` from its start (pending line end, final
    /// CRLF when needed, ".\r\n"); returns the bytes written. `output` must hold `maxFinishCount` bytes.
    public mutating func finish(into output: UnsafeMutableRawBufferPointer) -> Int {
        precondition(output.count >= Self.maxFinishCount, "DotStuffer: output smaller than maxFinishCount")
        var o = 0
        if pendingCR || !atLineStart { output[0] = 13; output[1] = 10; o = 2 }
        output[o] = UInt8(ascii: "."); output[o + 1] = 13; output[o + 2] = 10
        reset()
        return o + 3
    }

    /// Encodes `chunk` onto the end of `output`.
    public mutating func stuff(_ chunk: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        guard chunk.count > 0 else { return }
        output.appendDirectly(maxCount: Self.maxStuffedCount(chunk.count)) { stuff(chunk, into: $0) }
    }

    public mutating func stuff(_ chunk: [UInt8], into output: inout ByteBuffer) {
        chunk.withUnsafeBytes { stuff($0, into: &output) }
    }

    /// Ends the message: pending line end, final CRLF when needed, ".\r\n".
    public mutating func finish(into output: inout ByteBuffer) {
        output.appendDirectly(maxCount: Self.maxFinishCount) { finish(into: $0) }
    }
}
