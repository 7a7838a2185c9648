/// The DNS wire format the responder needs (RFC 1035): parse a query's
/// header and first question, build a response. Minimal on purpose; the
/// project's general DNS codec lives in PeregrineCore once it lands.
enum SinkDNSCodec {
    struct Query: Equatable {
        var id: UInt16
        var flags: UInt16
        var name: String
        var type: UInt16
        var qclass: UInt16
        /// The question section's bytes (name + type + class), echoed in the response.
        var questionEnd: Int
    }

    enum Parsed: Equatable {
        /// Not a query at all (too short, or a response): drop it.
        case ignore
        /// The header was readable, the question not: FORMERR with this id.
        case malformed(id: UInt16)
        case query(Query)
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> Parsed {
        guard b.count >= 12 else { return .ignore }
        let id = UInt16(b[0]) << 8 | UInt16(b[1])
        let flags = UInt16(b[2]) << 8 | UInt16(b[3])
        if flags & 0x8000 != 0 { return .ignore }       // a response: ignore
        let qd = UInt16(b[4]) << 8 | UInt16(b[5])
        guard qd >= 1 else { return .malformed(id: id) }
        var i = 12
        var labels: [String] = []
        var total = 0
        while true {
            guard i < b.count else { return .malformed(id: id) }
            let len = Int(b[i])
            i += 1
            if len == 0 { break }
            guard len < 64, i + len <= b.count else { return .malformed(id: id) }  // no compression in questions
            total += len + 1
            guard total <= 255 else { return .malformed(id: id) }
            labels.append(String(decoding: b[i..<(i + len)], as: UTF8.self))
            i += len
        }
        guard i + 4 <= b.count else { return .malformed(id: id) }
        let type = UInt16(b[i]) << 8 | UInt16(b[i + 1])
        let qclass = UInt16(b[i + 2]) << 8 | UInt16(b[i + 3])
        return .query(Query(id: id, flags: flags, name: labels.joined(separator: "."), type: type,
                              qclass: qclass, questionEnd: i + 4))
    }

    static func encodeName(_ name: String, into out: inout [UInt8]) {
        for label in name.split(separator: ".") {
            let bytes = Array(label.utf8.prefix(63))
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
    }

    static func u16(_ v: UInt16, _ out: inout [UInt8]) { out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xff)) }
    static func u32(_ v: UInt32, _ out: inout [UInt8]) {
        out.append(UInt8(v >> 24)); out.append(UInt8((v >> 16) & 0xff)); out.append(UInt8((v >> 8) & 0xff)); out.append(UInt8(v & 0xff))
    }

    /// FORMERR for a query whose question could not be read.
    static func formatError(id: UInt16) -> [UInt8] {
        var out: [UInt8] = []
        u16(id, &out); u16(0x8001, &out); u16(0, &out); u16(0, &out); u16(0, &out); u16(0, &out)
        return out
    }

    /// The response to `q` (whose question bytes are `question`).
    static func response(to q: Query, question: UnsafeRawBufferPointer, answer: SinkDNSZone.Answer, ttl: UInt32 = 300) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        var rcode: UInt16 = 0
        var answers: [(UInt16, [UInt8])] = []     // (type, rdata) for the question name
        var additional: [(String, [UInt8])] = []  // A/AAAA of MX hosts
        if q.qclass != 1 && q.qclass != 255 {
            rcode = 4  // NOTIMP for other classes
        } else {
            switch answer {
            case .nxDomain: rcode = 3
            case .noData: break
            case .a(let addr): answers.append((addr.count == 4 ? 1 : 28, addr))
            case .mx(let hosts):
                for (i, h) in hosts.enumerated() {
                    var rdata: [UInt8] = []
                    u16(UInt16(10 * (i + 1)), &rdata)
                    encodeName(h.name, into: &rdata)
                    answers.append((15, rdata))
                    additional.append((h.name, h.address))
                }
            }
        }
        let opcodeAndRD = q.flags & 0x7900  // opcode + RD
        u16(q.id, &out)
        u16(0x8000 | 0x0400 | opcodeAndRD | rcode, &out)  // QR, AA
        u16(1, &out)
        u16(UInt16(answers.count), &out)
        u16(0, &out)
        u16(UInt16(additional.count), &out)
        out += question
        for (type, rdata) in answers {
            u16(0xC00C, &out)   // pointer to the question name
            u16(type, &out); u16(1, &out); u32(ttl, &out)
            u16(UInt16(rdata.count), &out); out += rdata
        }
        for (name, addr) in additional {
            encodeName(name, into: &out)
            u16(addr.count == 4 ? 1 : 28, &out); u16(1, &out); u32(ttl, &out)
            u16(UInt16(addr.count), &out); out += addr
        }
        return out
    }
}
