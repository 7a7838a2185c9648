#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Streaming DATA decoder (RFC 5321 §4.5.2): removes the leading dot of
/// dot-stuffed lines and finds the "<CRLF>.<CRLF>" terminator across any
/// split of the input. Content is handed on as slices of the input (no copy).
///
/// Line-end rule (the SMTP smuggling defence): inside DATA only CRLF ends a
/// line. A bare LF or bare CR is ordinary content, passed on unchanged and
/// flagged (`sawBareLineFeed`), so "\n.\n", "\r\n.\n" and "\n.\r\n" never end
/// the message. The terminator's leading CRLF belongs to the message.
public struct DotUnstuffer: Sendable {
    enum State: Sendable { case lineStart, dot, dotCR, inLine }
    private var state: State = .lineStart
    private var lastWasCR = false
    private var lineLength = 0

    /// Longest text line including CRLF (RFC 5321: 1000).
    public var maxLineLength: Int
    /// A line longer than `maxLineLength` was seen.
    public private(set) var sawOverlongLine = false
    /// A LF not preceded by CR was seen.
    public private(set) var sawBareLineFeed = false
    /// A CR not followed by LF was seen.
    public private(set) var sawBareCarriageReturn = false
    /// A line's leading (stuffing) dot was removed.
    public private(set) var removedDot = false
    /// The content handed on is its own wire form: it dot-stuffs to itself
    /// (no line starts with a dot, every line ends with CRLF, none is bare),
    /// so it can be sent again as it is, followed by ".\r\n".
    public var contentIsWireForm: Bool { !sawBareLineFeed && !sawBareCarriageReturn && !removedDot }

    public enum Progress: Equatable, Sendable {
        /// All input consumed; the terminator was not seen yet.
        case needMore
        /// The terminator ended at `consumed` bytes into this input; bytes after it are not DATA.
        case complete(consumed: Int)
    }

    public init(maxLineLength: Int = 1000) {
        self.maxLineLength = maxLineLength
    }

    /// Ready for a new message.
    public mutating func reset() {
        state = .lineStart; lastWasCR = false; lineLength = 0
        sawOverlongLine = false; sawBareLineFeed = false
        sawBareCarriageReturn = false; removedDot = false
    }

    /// Consumes `input`, calling `emit` with each run of message content.
    public mutating func consume(_ input: UnsafeRawBufferPointer,
                                 emit: (UnsafeRawBufferPointer) -> Void) -> Progress {
        let n = input.count
        guard n > 0, let base = input.baseAddress else { return .needMore }
        var i = 0
        var chunkStart = 0
        @inline(__always) func flush(_ end: Int) {
            if end > chunkStart { emit(UnsafeRawBufferPointer(start: base + chunkStart, count: end - chunkStart)) }
        }
        while i < n {
            switch state {
            case .lineStart:
                if input[i] == UInt8(ascii: ".") {
                    flush(i)
                    i += 1
                    chunkStart = i
                    lineLength = 1
                    state = .dot
                } else {
                    lineLength = 0
                    lastWasCR = false
                    state = .inLine
                }
            case .dot:
                if input[i] == 13 {
                    i += 1
                    chunkStart = i           // hold the CR back
                    lineLength = 2
                    state = .dotCR
                } else {
                    lastWasCR = false
                    removedDot = true
                    state = .inLine          // the stuffing dot stays dropped
                }
            case .dotCR:
                if input[i] == 10 {
                    state = .lineStart
                    return .complete(consumed: i + 1)
                }
                var cr: UInt8 = 13
                withUnsafeBytes(of: &cr) { emit($0) }
                removedDot = true
                sawBareCarriageReturn = true   // "." CR and not LF
                lastWasCR = true
                state = .inLine
            case .inLine:
                let rest = n - i
                // A CR held from the previous input that is not followed by LF here is bare.
                if lastWasCR && input[i] != 10 { sawBareCarriageReturn = true }
                if let p = memchr(base + i, 10, rest) {
                    let j = base.distance(to: UnsafeRawPointer(p))
                    lineLength += j - i + 1
                    let crBefore = j > i ? input[j - 1] == 13 : lastWasCR
                    // Any other CR in the line is bare (searched only while none was seen yet).
                    if !sawBareCarriageReturn, j - 1 > i, memchr(base + i, 13, j - 1 - i) != nil {
                        sawBareCarriageReturn = true
                    }
                    i = j + 1
                    lastWasCR = false
                    if crBefore {
                        if lineLength > maxLineLength { sawOverlongLine = true }
                        state = .lineStart
                    } else {
                        sawBareLineFeed = true
                    }
                } else {
                    lineLength += rest
                    if !sawBareCarriageReturn, rest > 1, memchr(base + i, 13, rest - 1) != nil {
                        sawBareCarriageReturn = true
                    }
                    lastWasCR = input[n - 1] == 13
                    i = n
                    if lineLength > maxLineLength { sawOverlongLine = true }
                }
            }
        }
        flush(n)
        return .needMore
    }
}
