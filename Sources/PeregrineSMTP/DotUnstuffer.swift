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
                    state = .inLine          // the stuffing dot stays dropped
                }
            case .dotCR:
                if input[i] == 10 {
                    state = .lineStart
                    return .complete(consumed: i + 1)
                }
                var cr: UInt8 = 13
                withUnsafeBytes(of: &cr) { emit($0) }
                lastWasCR = true
                state = .inLine
            case .inLine:
                let rest = n - i
                if let p = memchr(base + i, 10, rest) {
                    let j = base.distance(to: UnsafeRawPointer(p))
                    lineLength += j - i + 1
                    let crBefore = j > i ? input[j - 1] == 13 : lastWasCR
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
