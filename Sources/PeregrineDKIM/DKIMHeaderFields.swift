/// The header fields of a message, as byte ranges (RFC 5322 §2.2): each
/// field with its continuation lines and final line end; the body starts
/// after the first empty line. Reused per message (`parse` clears it), so
/// finding fields allocates nothing once the array has grown.
///
/// A caller that has already scanned the message's header section (the
/// daemon's HeaderSection at injection) builds this from its ranges with
/// `appendField` instead of scanning again: one parse per message.
public struct DKIMHeaderFields {
    public struct Field {
        /// The whole field, continuation lines and final CRLF included.
        public var range: Range<Int>
        /// The name, before the colon.
        public var name: Range<Int>
        /// After the colon, up to the end of the field (final CRLF excluded).
        public var value: Range<Int>
    }

    public private(set) var fields: [Field] = []
    /// Offset of the first body byte (after the empty line), or the end if none.
    public var bodyStart = 0

    public init() {}

    /// Scans the header section of `bytes` (clears what was there).
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) {
        fields.removeAll(keepingCapacity: true)
        bodyStart = scan(bytes, from: 0)
    }

    /// Empties the list, keeping its storage.
    public mutating func removeAll() {
        fields.removeAll(keepingCapacity: true)
        bodyStart = 0
    }

    /// Appends the whole fields found in `bytes[range]` (header lines, no
    /// empty line: e.g. fields an MTA puts above a message); offsets are
    /// indices into `bytes`. Returns false when the range holds anything but
    /// whole fields.
    public mutating func appendFields(scanning range: Range<Int>, of bytes: UnsafeRawBufferPointer) -> Bool {
        let fieldsBefore = fields.count
        let end = scan(UnsafeRawBufferPointer(rebasing: bytes[0..<range.upperBound]), from: range.lowerBound)
        if end != range.upperBound { fields.removeSubrange(fieldsBefore...); return false }
        return true
    }

    /// Appends one field already delimited by another scan (its whole
    /// range, final line end included, and its colon), as `parse` would
    /// have found it in `bytes`.
    public mutating func appendField(range: Range<Int>, colon: Int, in bytes: UnsafeRawBufferPointer) {
        var valueEnd = range.upperBound
        if valueEnd > colon + 1 && bytes[valueEnd - 1] == 10 { valueEnd -= 1 }
        if valueEnd > colon + 1 && bytes[valueEnd - 1] == 13 { valueEnd -= 1 }
        fields.append(Field(range: range, name: range.lowerBound..<colon, value: colon + 1..<valueEnd))
    }

    /// Appends the fields from `start`; returns where the body starts (the end when the
    /// header section does not end).
    private mutating func scan(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        let end = bytes.count
        var i = start
        while i < end {
            if bytes[i] == 13, i + 1 < end, bytes[i + 1] == 10 { return i + 2 }
            if bytes[i] == 10 { return i + 1 }
            let start = i
            var colon = -1
            var j = i
            while j < end {
                if colon < 0 && bytes[j] == UInt8(ascii: ":") { colon = j }
                if bytes[j] == 10 {
                    if j + 1 < end && (bytes[j + 1] == 32 || bytes[j + 1] == 9) { j += 1; continue }
                    break
                }
                j += 1
            }
            let fieldEnd = min(j + 1, end)
            guard colon > start else { return start } // not a field: the rest is body
            appendField(range: start..<fieldEnd, colon: colon, in: bytes)
            i = fieldEnd
        }
        return end
    }

    /// Whether the field's name (trailing blanks ignored) equals `name`, ASCII case-insensitively.
    static func name(_ field: Field, in bytes: UnsafeRawBufferPointer, equals name: [UInt8]) -> Bool {
        var end = field.name.upperBound
        while end > field.name.lowerBound && (bytes[end - 1] == 32 || bytes[end - 1] == 9) { end -= 1 }
        guard end - field.name.lowerBound == name.count else { return false }
        var k = 0
        for i in field.name.lowerBound..<end {
            if lower(bytes[i]) != lower(name[k]) { return false }
            k += 1
        }
        return true
    }

    /// The same for a name given as a String (the configured `h=` list),
    /// compared in place: no byte array per name and message.
    public static func name(_ field: Field, in bytes: UnsafeRawBufferPointer, equals name: String) -> Bool {
        var end = field.name.upperBound
        while end > field.name.lowerBound && (bytes[end - 1] == 32 || bytes[end - 1] == 9) { end -= 1 }
        // Lengths first (O(1) for a native String): most names of the signed list differ in length.
        guard name.utf8.count == end - field.name.lowerBound else { return false }
        var i = field.name.lowerBound
        for c in name.utf8 {
            guard i < end, lower(bytes[i]) == lower(c) else { return false }
            i += 1
        }
        return i == end
    }

    /// ASCII case-insensitive equality of two names.
    static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        return zip(a.utf8, b.utf8).allSatisfy { lower($0) == lower($1) }
    }

    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c + 32 : c }
}

/// Header canonicalisation (RFC 6376 §3.4.1 simple, §3.4.2 relaxed) into a
/// reusable output buffer.
enum DKIMHeaderCanonicalizer {
    /// Appends the canonical form of `bytes[range]`, a whole field `name:value`
    /// whose value may be folded. `includeLineEnd: false` for the
    /// DKIM-Signature field itself, which is hashed without its final CRLF.
    static func append(field bytes: UnsafeRawBufferPointer, name: Range<Int>, value: Range<Int>, fullEnd: Int,
                       _ canonicalization: DKIMCanonicalization, includeLineEnd: Bool, into out: inout [UInt8]) {
        switch canonicalization {
        case .simple:
            let end = includeLineEnd ? fullEnd : value.upperBound
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[name.lowerBound..<end]))
            // A last field without a line end still ends with CRLF in canonical form.
            if includeLineEnd && (fullEnd == value.upperBound) { out.append(13); out.append(10) }
        case .relaxed:
            var nameEnd = name.upperBound
            while nameEnd > name.lowerBound && (bytes[nameEnd - 1] == 32 || bytes[nameEnd - 1] == 9) { nameEnd -= 1 }
            for i in name.lowerBound..<nameEnd { out.append(DKIMHeaderFields.lower(bytes[i])) }
            out.append(UInt8(ascii: ":"))
            var pendingSpace = false
            var started = false
            var i = value.lowerBound
            let end = value.upperBound
            while i < end {
                let c = bytes[i]
                if c == 13 || c == 10 { i += 1; continue } // unfold
                if c == 32 || c == 9 { pendingSpace = started; i += 1; continue }
                if pendingSpace { out.append(32); pendingSpace = false }
                // A run of other bytes is copied as it is, in one append (not one per byte).
                var j = i + 1
                while j < end {
                    let d = bytes[j]
                    if d == 13 || d == 10 || d == 32 || d == 9 { break }
                    j += 1
                }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<j]))
                started = true
                i = j
            }
            if includeLineEnd { out.append(13); out.append(10) }
        }
    }
}
