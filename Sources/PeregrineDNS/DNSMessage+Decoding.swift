extension DNSMessage {
    /// Decodes a packet. Every read is bounds-checked; compression pointers
    /// must point strictly backwards (so a chain always ends) and a name may
    /// take at most 127 jumps. Bytes after the last record are ignored.
    public init(decoding bytes: [UInt8]) throws(DNSError) {
        var reader = DNSPacketReader(bytes: bytes)
        let id = try reader.readUInt16("header")
        let flags = try reader.readUInt16("header")
        let qdCount = try reader.readUInt16("header")
        let anCount = try reader.readUInt16("header")
        let nsCount = try reader.readUInt16("header")
        let arCount = try reader.readUInt16("header")
        var questions: [DNSQuestion] = []
        for _ in 0..<qdCount {
            let name = try reader.readName()
            let type = DNSRecordType(rawValue: try reader.readUInt16("question"))
            let cls = try reader.readUInt16("question")
            questions.append(DNSQuestion(name: name, type: type, recordClass: cls))
        }
        let answers = try reader.readRecords(Int(anCount))
        let authorities = try reader.readRecords(Int(nsCount))
        let additionals = try reader.readRecords(Int(arCount))
        self.init(id: id,
                  isResponse: flags & 0x8000 != 0,
                  opcode: UInt8((flags >> 11) & 0x0F),
                  isAuthoritative: flags & 0x0400 != 0,
                  isTruncated: flags & 0x0200 != 0,
                  recursionDesired: flags & 0x0100 != 0,
                  recursionAvailable: flags & 0x0080 != 0,
                  responseCode: DNSResponseCode(rawValue: UInt8(flags & 0x000F)),
                  questions: questions, answers: answers, authorities: authorities, additionals: additionals)
    }
}

/// A bounds-checked cursor over one packet.
struct DNSPacketReader {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func readUInt8(_ what: String) throws(DNSError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated(what: what, offset: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readUInt16(_ what: String) throws(DNSError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw .truncated(what: what, offset: offset) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readUInt32(_ what: String) throws(DNSError) -> UInt32 {
        let high = try readUInt16(what)
        let low = try readUInt16(what)
        return UInt32(high) << 16 | UInt32(low)
    }

    mutating func readBytes(_ count: Int, _ what: String) throws(DNSError) -> [UInt8] {
        guard count >= 0, offset + count <= bytes.count else { throw .truncated(what: what, offset: offset) }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Reads a possibly compressed name at the cursor and moves past it.
    mutating func readName() throws(DNSError) -> String {
        let start = offset
        var position = offset
        var labels: [String] = []
        var wireLength = 1
        var jumps = 0
        var resumeAt: Int?
        while true {
            guard position < bytes.count else { throw .truncated(what: "name", offset: position) }
            let length = bytes[position]
            switch length & 0xC0 {
            case 0xC0:
                guard position + 1 < bytes.count else { throw .truncated(what: "name pointer", offset: position) }
                let target = Int(length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < position else { throw .badPointer(offset: position, target: target) }
                jumps += 1
                guard jumps <= 127 else { throw .tooManyPointers(offset: start) }
                if resumeAt == nil { resumeAt = position + 2 }
                position = target
            case 0x00:
                if length == 0 {
                    offset = resumeAt ?? position + 1
                    return labels.joined(separator: ".")
                }
                let count = Int(length)
                guard position + 1 + count <= bytes.count else { throw .truncated(what: "label", offset: position) }
                wireLength += count + 1
                guard wireLength <= 255 else { throw .nameTooLong(offset: start) }
                labels.append(DNSPacketReader.labelText(bytes[(position + 1)..<(position + 1 + count)]))
                position += 1 + count
            default:
                throw .badLabelType(offset: position, byte: length)
            }
        }
    }

    mutating func readRecords(_ count: Int) throws(DNSError) -> [DNSResourceRecord] {
        var records: [DNSResourceRecord] = []
        records.reserveCapacity(min(count, 64))
        for _ in 0..<count { records.append(try readRecord()) }
        return records
    }

    mutating func readRecord() throws(DNSError) -> DNSResourceRecord {
        let name = try readName()
        let type = DNSRecordType(rawValue: try readUInt16("record header"))
        let cls = try readUInt16("record header")
        let ttl = try readUInt32("record header")
        let length = Int(try readUInt16("record header"))
        let dataStart = offset
        let dataEnd = dataStart + length
        guard dataEnd <= bytes.count else { throw .truncated(what: "\(type) record data", offset: dataStart) }
        let data: DNSRecordData
        switch type {
        case .a:
            guard length == 4 else { throw .badRecordData(type: type, offset: dataStart) }
            data = .a(try readBytes(4, "A"))
        case .aaaa:
            guard length == 16 else { throw .badRecordData(type: type, offset: dataStart) }
            data = .aaaa(try readBytes(16, "AAAA"))
        case .mx:
            let preference = try readUInt16("MX")
            data = .mx(preference: preference, exchange: try readName())
        case .cname: data = .cname(try readName())
        case .ns: data = .ns(try readName())
        case .ptr: data = .ptr(try readName())
        case .soa:
            let primary = try readName()
            let mailbox = try readName()
            data = .soa(DNSStartOfAuthority(
                primaryServer: primary, responsibleMailbox: mailbox,
                serial: try readUInt32("SOA"), refresh: try readUInt32("SOA"), retry: try readUInt32("SOA"),
                expire: try readUInt32("SOA"), minimum: try readUInt32("SOA")))
        case .txt:
            var strings: [[UInt8]] = []
            while offset < dataEnd {
                let n = Int(try readUInt8("TXT"))
                guard offset + n <= dataEnd else { throw .badRecordData(type: type, offset: dataStart) }
                strings.append(try readBytes(n, "TXT"))
            }
            data = .txt(strings)
        default:
            data = .unknown(try readBytes(length, "\(type) record data"))
        }
        // A name inside RDATA may run past RDLENGTH in a hostile packet; refuse it.
        guard offset == dataEnd else { throw .badRecordData(type: type, offset: dataStart) }
        return DNSResourceRecord(name: name, ttl: ttl, data: data, recordClass: cls, unknownType: type)
    }

    /// Printable ASCII as is; `.`, `\` and anything else escaped as in zone files.
    static func labelText(_ raw: ArraySlice<UInt8>) -> String {
        var text = ""
        text.reserveCapacity(raw.count)
        for byte in raw {
            switch byte {
            case UInt8(ascii: "."), UInt8(ascii: "\\"):
                text.append("\\")
                text.append(Character(Unicode.Scalar(byte)))
            case 0x21...0x7E:
                text.append(Character(Unicode.Scalar(byte)))
            default:
                let digits = String(byte)
                text.append("\\" + String(repeating: "0", count: 3 - digits.count) + digits)
            }
        }
        return text
    }
}
