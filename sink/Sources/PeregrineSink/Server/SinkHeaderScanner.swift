/// Finds the value of the `X-Loadgen-Id:` header while a body streams past,
/// in bytes, looking only at the header section (it stops at the first empty
/// line). Chunks may split anywhere. No allocation per message: the value
/// goes into a reused array.
struct SinkHeaderScanner {
    private enum State {
        /// At the start of a header line.
        case lineStart
        /// Matching the header name; `matched` bytes of it so far.
        case name(matched: Int)
        /// Inside a line that is not ours.
        case skipLine
        /// Copying the value.
        case value
        /// Past the headers, or done.
        case done
    }

    private static let name: [UInt8] = Array("x-loadgen-id:".utf8)
    private var state: State = .lineStart
    private(set) var value: [UInt8] = []
    private(set) var found = false

    init() { value.reserveCapacity(64) }

    mutating func reset() {
        state = .lineStart
        value.removeAll(keepingCapacity: true)
        found = false
    }

    /// The trimmed value, when the header was seen.
    var trimmedValue: ArraySlice<UInt8>? {
        guard found else { return nil }
        var s = value[...]
        while let f = s.first, f == 32 || f == 9 { s = s.dropFirst() }
        while let l = s.last, l == 32 || l == 9 || l == 13 { s = s.dropLast() }
        return s
    }

    mutating func scan(_ chunk: UnsafeRawBufferPointer) {
        if case .done = state { return }
        for byte in chunk {
            switch state {
            case .done:
                return
            case .lineStart:
                if byte == 10 { state = .done; continue }   // empty line (LF or CRLF): end of headers
                if byte == 13 { continue }
                if found {
                    state = .skipLine   // already have it; keep going only to find the end
                } else {
                    state = Self.lower(byte) == Self.name[0] ? .name(matched: 1) : .skipLine
                }
                if byte == 32 || byte == 9 { state = .skipLine }  // folded continuation
            case .name(let m):
                if byte == 10 { state = .lineStart; continue }
                if Self.lower(byte) == Self.name[m] {
                    if m + 1 == Self.name.count { state = .value; found = true; value.removeAll(keepingCapacity: true) }
                    else { state = .name(matched: m + 1) }
                } else {
                    state = .skipLine
                }
            case .skipLine:
                if byte == 10 { state = .lineStart }
            case .value:
                if byte == 10 { state = .lineStart; continue }
                if value.count < 256 { value.append(byte) }
            }
        }
    }

    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c + 32 : c }
}
