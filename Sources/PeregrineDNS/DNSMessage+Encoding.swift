extension DNSMessage {
    /// Encodes the message with name compression (RFC 1035 §4.1.4) for owner
    /// names and the names inside NS, CNAME, PTR, MX and SOA data.
    public func encode() throws(DNSError) -> [UInt8] {
        var writer = DNSPacketWriter()
        try writer.writeHeader(self, answers: answers.count, authorities: authorities.count, additionals: additionals.count)
        for question in questions {
            try writer.writeName(question.name)
            writer.writeUInt16(question.type.rawValue)
            writer.writeUInt16(question.recordClass)
        }
        for record in answers + authorities + additionals { try writer.writeRecord(record) }
        return writer.bytes
    }

    /// Encodes for a UDP reply of at most `maxSize` bytes (512 without EDNS):
    /// when the full answer does not fit, records are dropped from the end
    /// (additional, then authority, then answers) and TC is set.
    public func encodeForUDP(maxSize: Int = 512) throws(DNSError) -> [UInt8] {
        let full = try encode()
        if full.count <= maxSize { return full }
        var trimmed = self
        trimmed.isTruncated = true
        while true {
            if !trimmed.additionals.isEmpty { trimmed.additionals.removeLast() }
            else if !trimmed.authorities.isEmpty { trimmed.authorities.removeLast() }
            else if !trimmed.answers.isEmpty { trimmed.answers.removeLast() }
            else { return try trimmed.encode() }
            let bytes = try trimmed.encode()
            if bytes.count <= maxSize { return bytes }
        }
    }
}

/// Builds a packet, remembering where each name suffix was written so later
/// names can point at it.
struct DNSPacketWriter {
    var bytes: [UInt8] = []
    /// Suffix text → offset; only offsets below 0x4000 are pointable.
    var suffixOffsets: [String: Int] = [:]

    init() { bytes.reserveCapacity(512) }

    mutating func writeUInt16(_ v: UInt16) {
        bytes.append(UInt8(v >> 8))
        bytes.append(UInt8(v & 0xFF))
    }

    mutating func writeUInt32(_ v: UInt32) {
        writeUInt16(UInt16(v >> 16))
        writeUInt16(UInt16(v & 0xFFFF))
    }

    mutating func writeHeader(_ m: DNSMessage, answers: Int, authorities: Int, additionals: Int) throws(DNSError) {
        for (count, section) in [(m.questions.count, "questions"), (answers, "answers"),
                                 (authorities, "authorities"), (additionals, "additionals")] where count > 0xFFFF {
            throw .tooLarge("\(count) \(section)")
        }
        writeUInt16(m.id)
        var flags: UInt16 = 0
        if m.isResponse { flags |= 0x8000 }
        flags |= UInt16(m.opcode & 0x0F) << 11
        if m.isAuthoritative { flags |= 0x0400 }
        if m.isTruncated { flags |= 0x0200 }
        if m.recursionDesired { flags |= 0x0100 }
        if m.recursionAvailable { flags |= 0x0080 }
        flags |= UInt16(m.responseCode.rawValue & 0x0F)
        writeUInt16(flags)
        writeUInt16(UInt16(m.questions.count))
        writeUInt16(UInt16(answers))
        writeUInt16(UInt16(authorities))
        writeUInt16(UInt16(additionals))
    }

    mutating func writeName(_ name: String) throws(DNSError) {
        let labels = try DNSPacketWriter.wireLabels(name)
        var total = 1
        for label in labels { total += label.count + 1 }
        guard total <= 255 else { throw .badName(name) }
        for i in labels.indices {
            // Exact-case keys: compressing "yahoo.com" onto "Yahoo.com" would be legal but would not round-trip.
            let suffix = labels[i...].map { DNSPacketReader.labelText($0[...]) }.joined(separator: ".")
            if let target = suffixOffsets[suffix] {
                writeUInt16(0xC000 | UInt16(target))
                return
            }
            if bytes.count < 0x4000 { suffixOffsets[suffix] = bytes.count }
            bytes.append(UInt8(labels[i].count))
            bytes.append(contentsOf: labels[i])
        }
        bytes.append(0)
    }

    mutating func writeRecord(_ record: DNSResourceRecord) throws(DNSError) {
        try writeName(record.name)
        writeUInt16(record.type.rawValue)
        writeUInt16(record.recordClass)
        writeUInt32(record.ttl)
        let lengthAt = bytes.count
        writeUInt16(0)
        let start = bytes.count
        switch record.data {
        case .a(let b):
            guard b.count == 4 else { throw .badData("A record needs 4 bytes, got \(b.count)") }
            bytes.append(contentsOf: b)
        case .aaaa(let b):
            guard b.count == 16 else { throw .badData("AAAA record needs 16 bytes, got \(b.count)") }
            bytes.append(contentsOf: b)
        case .mx(let preference, let exchange):
            writeUInt16(preference)
            try writeName(exchange)
        case .cname(let n), .ns(let n), .ptr(let n):
            try writeName(n)
        case .soa(let soa):
            try writeName(soa.primaryServer)
            try writeName(soa.responsibleMailbox)
            for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] { writeUInt32(v) }
        case .txt(let strings):
            for s in strings {
                guard s.count <= 255 else { throw .badData("TXT string of \(s.count) bytes (max 255)") }
                bytes.append(UInt8(s.count))
                bytes.append(contentsOf: s)
            }
        case .unknown(let raw):
            bytes.append(contentsOf: raw)
        }
        let length = bytes.count - start
        guard length <= 0xFFFF else { throw .tooLarge("record data of \(length) bytes") }
        bytes[lengthAt] = UInt8(length >> 8)
        bytes[lengthAt + 1] = UInt8(length & 0xFF)
    }

    /// Splits dotted text into wire labels, undoing `\.`, `\\` and `\DDD` escapes.
    /// The root (`""` or `"."`) has no labels; a trailing dot is allowed.
    static func wireLabels(_ name: String) throws(DNSError) -> [[UInt8]] {
        let utf8 = Array(name.utf8)
        if utf8.isEmpty || utf8 == [UInt8(ascii: ".")] { return [] }
        var labels: [[UInt8]] = []
        var current: [UInt8] = []
        var i = 0
        while i < utf8.count {
            let byte = utf8[i]
            if byte == UInt8(ascii: "\\") {
                guard i + 1 < utf8.count else { throw .badName(name) }
                let next = utf8[i + 1]
                if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(next) {
                    guard i + 3 < utf8.count else { throw .badName(name) }
                    let digits = utf8[(i + 1)...(i + 3)]
                    guard digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                          let value = UInt8(String(decoding: digits, as: UTF8.self)) else { throw .badName(name) }
                    current.append(value)
                    i += 4
                } else {
                    current.append(next)
                    i += 2
                }
                continue
            }
            if byte == UInt8(ascii: ".") {
                guard !current.isEmpty, current.count <= 63 else { throw .badName(name) }
                labels.append(current)
                current = []
                i += 1
                if i == utf8.count { return labels }
                continue
            }
            current.append(byte)
            i += 1
        }
        guard !current.isEmpty, current.count <= 63 else { throw .badName(name) }
        labels.append(current)
        return labels
    }
}
