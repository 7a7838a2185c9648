/// What is wrong with the bytes a Redis server sent. After one, the parser
/// stays failed: the stream cannot be resynchronised, the connection closes.
package struct RESPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    package let reason: String
    package init(_ reason: String) { self.reason = reason }
    package var description: String { "malformed Redis reply: \(reason)" }
}

/// Incremental RESP2 reply parser (sans-I/O): `feed` bytes as they arrive,
/// in any split, then take complete replies with `next()` until it returns
/// nil. Nested arrays are parsed with an explicit stack, not recursion.
///
/// Bounded: a line longer than `maxLineLength`, a bulk string longer than
/// `maxBulkLength`, an array longer than `maxArrayCount` or nested deeper
/// than `maxDepth` is refused before anything is allocated for it, so a
/// broken or hostile peer cannot make the node reserve gigabytes.
package struct RESPParser {
    package struct Limits: Sendable {
        package var maxLineLength: Int
        package var maxBulkLength: Int
        package var maxArrayCount: Int
        package var maxDepth: Int
        /// The cluster's replies are small: a few counters and lists of queue names.
        package init(maxLineLength: Int = 64 * 1024, maxBulkLength: Int = 16 * 1024 * 1024,
                    maxArrayCount: Int = 1 << 20, maxDepth: Int = 32) {
            self.maxLineLength = maxLineLength
            self.maxBulkLength = maxBulkLength
            self.maxArrayCount = maxArrayCount
            self.maxDepth = maxDepth
        }
    }

    private struct Frame {
        var remaining: Int
        var items: [RESPValue]
    }

    package let limits: Limits
    private var input: [UInt8] = []
    private var readIndex = 0
    /// Where the search for the current line's CRLF resumes (no rescanning of a long partial line).
    private var scanIndex = 0
    /// Set once a `$n` header is read: the body (n bytes + CRLF) is awaited.
    private var bulkLength: Int?
    private var stack: [Frame] = []
    private var failure: RESPProtocolError?

    package init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Bytes buffered and not yet part of a returned reply.
    package var bufferedBytes: Int { input.count - readIndex }

    /// True when no reply is partly received.
    package var isIdle: Bool { bufferedBytes == 0 && stack.isEmpty && bulkLength == nil }

    package mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        if readIndex > 0 && readIndex >= input.count / 2 {
            input.removeSubrange(0..<readIndex)
            scanIndex -= readIndex
            readIndex = 0
        }
        input.append(contentsOf: bytes)
    }

    package mutating func feed(_ bytes: some Sequence<UInt8>) {
        var a = Array(bytes)
        a.withUnsafeBytes { feed($0) }
        a.removeAll()
    }

    /// Forgets everything buffered (a new connection starts clean).
    package mutating func reset() {
        input.removeAll(keepingCapacity: true)
        readIndex = 0; scanIndex = 0
        bulkLength = nil
        stack.removeAll()
        failure = nil
    }

    /// The next complete reply, nil when more bytes are needed.
    package mutating func next() throws(RESPProtocolError) -> RESPValue? {
        if let failure { throw failure }
        do {
            return try parse()
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func parse() throws(RESPProtocolError) -> RESPValue? {
        while true {
            if let n = bulkLength {
                guard input.count - readIndex >= n + 2 else { return nil }
                guard input[readIndex + n] == 13, input[readIndex + n + 1] == 10 else {
                    throw RESPProtocolError("bulk string of \(n) bytes not followed by CRLF")
                }
                let body = Array(input[readIndex..<(readIndex + n)])
                consume(n + 2)
                bulkLength = nil
                if let done = complete(.bulk(body)) { return done }
                continue
            }
            guard let lineEnd = findCRLF() else {
                if input.count - readIndex > limits.maxLineLength {
                    throw RESPProtocolError("line longer than \(limits.maxLineLength) bytes")
                }
                return nil
            }
            guard lineEnd > readIndex else { throw RESPProtocolError("empty line where a reply was expected") }
            guard lineEnd - readIndex <= limits.maxLineLength else {
                throw RESPProtocolError("line longer than \(limits.maxLineLength) bytes")
            }
            let type = input[readIndex]
            let line = input[(readIndex + 1)..<lineEnd]
            let value: RESPValue
            switch type {
            case UInt8(ascii: "+"):
                value = .simple(Array(line))
            case UInt8(ascii: "-"):
                value = .error(Array(line))
            case UInt8(ascii: ":"):
                guard let i = RESPParser.parseInteger(line) else { throw RESPProtocolError("bad integer \(Self.show(line))") }
                value = .integer(i)
            case UInt8(ascii: "$"):
                guard let n = RESPParser.parseInteger(line), n >= -1 else { throw RESPProtocolError("bad bulk length \(Self.show(line))") }
                guard n <= Int64(limits.maxBulkLength) else {
                    throw RESPProtocolError("bulk string of \(n) bytes exceeds the limit of \(limits.maxBulkLength)")
                }
                consume(lineEnd + 2 - readIndex)
                if n == -1 {
                    if let done = complete(.null) { return done }
                } else {
                    bulkLength = Int(n)
                }
                continue
            case UInt8(ascii: "*"):
                guard let n = RESPParser.parseInteger(line), n >= -1 else { throw RESPProtocolError("bad array length \(Self.show(line))") }
                guard n <= Int64(limits.maxArrayCount) else {
                    throw RESPProtocolError("array of \(n) elements exceeds the limit of \(limits.maxArrayCount)")
                }
                consume(lineEnd + 2 - readIndex)
                if n <= 0 {
                    if let done = complete(n == -1 ? .null : .array([])) { return done }
                } else {
                    guard stack.count < limits.maxDepth else {
                        throw RESPProtocolError("arrays nested deeper than \(limits.maxDepth)")
                    }
                    var items: [RESPValue] = []
                    // Reserve only what the bytes at hand could hold: a header claiming
                    // a million elements must not allocate before they arrive.
                    items.reserveCapacity(min(Int(n), 64))
                    stack.append(Frame(remaining: Int(n), items: items))
                }
                continue
            default:
                throw RESPProtocolError("unknown reply type byte \(type)")
            }
            consume(lineEnd + 2 - readIndex)
            if let done = complete(value) { return done }
        }
    }

    /// Adds a finished value to the innermost open array; returns the top-level
    /// reply when that completes it (and every enclosing array).
    private mutating func complete(_ value: RESPValue) -> RESPValue? {
        var v = value
        while !stack.isEmpty {
            stack[stack.count - 1].items.append(v)
            stack[stack.count - 1].remaining -= 1
            guard stack[stack.count - 1].remaining == 0 else { return nil }
            v = .array(stack.removeLast().items)
        }
        return v
    }

    private mutating func consume(_ n: Int) {
        readIndex += n
        scanIndex = readIndex
        if readIndex == input.count {
            input.removeAll(keepingCapacity: true)
            readIndex = 0; scanIndex = 0
        }
    }

    /// Index of the CR of the first CRLF at or after the current line's start.
    private mutating func findCRLF() -> Int? {
        var i = max(scanIndex, readIndex)
        let end = input.count - 1
        while i < end {
            if input[i] == 13 && input[i + 1] == 10 { return i }
            i += 1
        }
        scanIndex = max(readIndex, end)   // the last byte may be a CR whose LF is still to come
        return nil
    }

    /// Strict decimal: optional '-', 1-19 digits, no overflow, nothing else.
    static func parseInteger(_ bytes: ArraySlice<UInt8>) -> Int64? {
        var i = bytes.startIndex
        var negative = false
        if i < bytes.endIndex, bytes[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        guard i < bytes.endIndex else { return nil }
        var v: Int64 = 0
        while i < bytes.endIndex {
            let d = bytes[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
            guard !o1, !o2 else { return nil }
            v = s
            i += 1
        }
        return v
    }

    private static func show(_ bytes: ArraySlice<UInt8>) -> String {
        let text = String(decoding: bytes.prefix(40), as: UTF8.self)
        return "\"\(text)\""
    }
}
