/// Finds header fields in a message's header section (RFC 5322 §2.2), on raw
/// bytes: injection reads `X-Virtual-MTA` and `X-Job` and removes the former
/// without decoding the message. Folded fields (continuation lines starting
/// with space or tab) are one field. Scanning stops at the first empty line.
public struct HeaderSection {
    public struct Field {
        /// Byte range of the whole field, continuation lines and final CRLF included.
        public var range: Range<Int>
        /// Byte range of the name (before the colon).
        public var name: Range<Int>
        /// Byte range of the value, after the colon and leading blanks, without the final CRLF.
        public var value: Range<Int>
    }

    public private(set) var fields: [Field] = []
    /// Offset of the first body byte (after the empty line), or the end if none.
    public private(set) var bodyStart: Int

    public init<C: RandomAccessCollection>(_ bytes: C) where C.Element == UInt8, C.Index == Int {
        // Every caller passes contiguous bytes: they are scanned by a non-generic
        // loop (the generic one, unspecialised in debug builds, allocated per byte).
        let base = bytes.startIndex
        if let s = bytes.withContiguousStorageIfAvailable({ HeaderSection(contiguous: $0, base: base) }) {
            self = s
        } else {
            self = Array(bytes).withUnsafeBufferPointer { HeaderSection(contiguous: $0, base: base) }
        }
    }

    /// Scans `bytes`; every offset stored is `base` + an index into `bytes`.
    private init(contiguous bytes: UnsafeBufferPointer<UInt8>, base: Int) {
        var i = 0
        let end = bytes.count
        bodyStart = base + end
        while i < end {
            // Empty line: end of the header section.
            if bytes[i] == 13, i + 1 < end, bytes[i + 1] == 10 { bodyStart = base + i + 2; return }
            if bytes[i] == 10 { bodyStart = base + i + 1; return }
            let lineStart = i
            var colon = -1
            var j = i
            // One field: up to a line end not followed by a continuation.
            while j < end {
                if colon < 0 && bytes[j] == UInt8(ascii: ":") { colon = j }
                if bytes[j] == 10 {
                    if j + 1 < end && (bytes[j + 1] == 32 || bytes[j + 1] == 9) { j += 1; continue }
                    break
                }
                j += 1
            }
            let fieldEnd = j + 1 < end ? j + 1 : end
            if colon > lineStart {
                var v = colon + 1
                while v < fieldEnd && (bytes[v] == 32 || bytes[v] == 9) { v += 1 }
                var ve = fieldEnd
                if ve > v && bytes[ve - 1] == 10 { ve -= 1 }
                if ve > v && bytes[ve - 1] == 13 { ve -= 1 }
                fields.append(Field(range: base + lineStart ..< base + fieldEnd, name: base + lineStart ..< base + colon,
                                    value: base + v ..< base + (ve > v ? ve : v)))
            } else {
                // Not a header line (no colon): the header section is malformed; treat
                // what follows as body, as most MTAs do.
                bodyStart = base + lineStart
                return
            }
            i = fieldEnd
        }
    }

    /// The first field whose name equals `name` (ASCII case-insensitive).
    public func first<C: RandomAccessCollection>(named name: String, in bytes: C) -> Field?
    where C.Element == UInt8, C.Index == Int {
        fields.first { Self.nameEquals($0.name, name, bytes) }
    }

    public func all<C: RandomAccessCollection>(named name: String, in bytes: C) -> [Field]
    where C.Element == UInt8, C.Index == Int {
        fields.filter { Self.nameEquals($0.name, name, bytes) }
    }

    static func nameEquals<C: RandomAccessCollection>(_ range: Range<Int>, _ name: String, _ bytes: C) -> Bool
    where C.Element == UInt8, C.Index == Int {
        let n = Array(name.utf8)
        guard range.count == n.count else { return false }
        for (k, b) in zip(range, n) {
            let c = bytes[k]
            let lower = (c >= 65 && c <= 90) ? c + 32 : c
            let want = (b >= 65 && b <= 90) ? b + 32 : b
            if lower != want { return false }
        }
        return true
    }

    /// The value as a String with folding removed and surrounding blanks trimmed.
    public static func string<C: RandomAccessCollection>(_ range: Range<Int>, in bytes: C) -> String
    where C.Element == UInt8, C.Index == Int {
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        for k in range where bytes[k] != 13 && bytes[k] != 10 { out.append(bytes[k]) }
        while let last = out.last, last == 32 || last == 9 { out.removeLast() }
        return String(decoding: out, as: UTF8.self)
    }
}
