import PeregrineIO

/// Why a reply could not be parsed. After an error the parser discards the
/// partial reply and resynchronises on the next line.
public enum SMTPReplyParseError: Error, Hashable, Sendable {
    /// A line that is not "DDD", "DDD text" or "DDD-text".
    case malformedLine([UInt8])
    /// A continuation line's code differs from the first line's.
    case inconsistentCode(expected: Int, got: Int)
    /// A line longer than the parser's limit.
    case lineTooLong
    /// A multi-line reply with more lines than the parser's limit.
    case tooManyLines(limit: Int)
}

/// Incremental parser of SMTP replies: feed bytes as they arrive, in any
/// split, and take complete (possibly multi-line) replies out in order.
/// Accepts CRLF and bare LF line ends.
public struct SMTPReplyParser: Sendable {
    private var buffer = ByteBuffer(capacity: 512)
    private var pendingLines: [String] = []
    private var pendingCode = 0
    private var pendingEnhanced: EnhancedStatusCode?
    private var discardingLongLine = false
    /// Longest line accepted (RFC 5321 says 512; real servers send longer).
    public var maxLineLength: Int
    /// Most lines in one reply: a server that streams "250-" lines forever
    /// would otherwise grow the pending reply without bound.
    public var maxLinesPerReply: Int

    public init(maxLineLength: Int = 8192, maxLinesPerReply: Int = 1000) {
        self.maxLineLength = maxLineLength
        self.maxLinesPerReply = maxLinesPerReply
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(bytes)
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// True when no partial reply is buffered.
    public var isIdle: Bool { buffer.isEmpty && pendingLines.isEmpty }

    /// The next complete reply, a parse error, or nil when more bytes are needed.
    public mutating func next() -> Result<SMTPReply, SMTPReplyParseError>? {
        while true {
            let found: (lineEnd: Int, next: Int)? = buffer.withUnsafeReadableBytes { p in
                // An index loop, not `firstIndex(of:)`: the generic search allocated
                // per byte in debug builds (87 malloc calls per relayed message).
                var lf = 0
                while lf < p.count && p[lf] != 10 { lf += 1 }
                guard lf < p.count else { return nil }
                let end = (lf > 0 && p[lf - 1] == 13) ? lf - 1 : lf
                return (end, lf + 1)
            }
            guard let (lineEnd, next) = found else {
                if buffer.readableBytes > maxLineLength {
                    buffer.clear()
                    discardingLongLine = true
                    reset()
                    return .failure(.lineTooLong)
                }
                return nil
            }
            if discardingLongLine {
                discardingLongLine = false
                buffer.moveReaderIndex(forwardBy: next)
                continue
            }
            if lineEnd > maxLineLength {
                buffer.moveReaderIndex(forwardBy: next)
                reset()
                return .failure(.lineTooLong)
            }
            let result = buffer.withUnsafeReadableBytes { p in
                parseLine(UnsafeRawBufferPointer(rebasing: p[0..<lineEnd]))
            }
            buffer.moveReaderIndex(forwardBy: next)
            buffer.compactIfNeeded()
            if let result { return result }
        }
    }

    private mutating func reset() {
        pendingLines.removeAll(keepingCapacity: true)
        pendingCode = 0
        pendingEnhanced = nil
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    private mutating func parseLine(_ line: UnsafeRawBufferPointer) -> Result<SMTPReply, SMTPReplyParseError>? {
        guard line.count >= 3, Self.isDigit(line[0]), Self.isDigit(line[1]), Self.isDigit(line[2]),
              line[0] >= UInt8(ascii: "2"), line[0] <= UInt8(ascii: "5"),
              line.count == 3 || line[3] == UInt8(ascii: " ") || line[3] == UInt8(ascii: "-") else {
            reset()
            return .failure(.malformedLine(Array(line)))
        }
        let code = Int(line[0] - 0x30) * 100 + Int(line[1] - 0x30) * 10 + Int(line[2] - 0x30)
        let isLast = line.count == 3 || line[3] == UInt8(ascii: " ")
        if !pendingLines.isEmpty && code != pendingCode {
            let expected = pendingCode
            reset()
            return .failure(.inconsistentCode(expected: expected, got: code))
        }
        var text = line.count > 4 ? UnsafeRawBufferPointer(rebasing: line[4...]) : UnsafeRawBufferPointer(start: nil, count: 0)
        // An enhanced code whose class matches the reply's class is split off.
        if let (e, len) = EnhancedStatusCode.parse(text), Int(e.statusClass) == code / 100,
           len == text.count || text[len] == UInt8(ascii: " ") {
            if pendingLines.isEmpty { pendingEnhanced = e }
            if pendingEnhanced == e || pendingLines.isEmpty {
                text = UnsafeRawBufferPointer(rebasing: text[min(len + 1, text.count)...])
            }
        }
        pendingCode = code
        if !isLast && pendingLines.count + 1 >= maxLinesPerReply {
            let limit = maxLinesPerReply
            reset()
            return .failure(.tooManyLines(limit: limit))
        }
        pendingLines.append(String(decoding: text, as: UTF8.self))
        guard isLast else { return nil }
        let reply = SMTPReply(code: code, enhancedCode: pendingEnhanced, lines: pendingLines)
        reset()
        return .success(reply)
    }
}
