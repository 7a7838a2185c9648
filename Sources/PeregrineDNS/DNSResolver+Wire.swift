/// The seam between the resolver and the project's DNS codec (`DNSMessage`):
/// the only resolver file that knows the codec's API.
struct DNSResolverResponse {
    var id: UInt16
    var rcode: Int
    var truncated: Bool
    /// Lowercase, no trailing dot.
    var questionName: String
    var questionType: UInt16
    /// Answer-section records of the types the resolver uses (MX, A, AAAA, CNAME).
    var answers: [DNSResolverRecord]
    /// Additional-section records of those types (MX hosts' addresses).
    var additional: [DNSResolverRecord]
    /// min(SOA TTL, SOA minimum) from the authority section (RFC 2308), when present.
    var negativeTTL: UInt32?
}

enum DNSResolverWire {
    /// A recursive (RD) query for `name`/`type`; nil if the name cannot be encoded.
    static func encodeQuery(id: UInt16, name: String, type: DNSResolverQueryType) -> [UInt8]? {
        try? DNSMessage.query(id: id, name: name, type: DNSRecordType(rawValue: type.rawValue)).encode()
    }

    /// A response's fields the resolver uses; nil if it is not a well-formed
    /// response with exactly one question.
    static func decodeResponse(_ bytes: UnsafeRawBufferPointer) -> DNSResolverResponse? {
        guard let m = try? DNSMessage(decoding: Array(bytes)), m.isResponse, m.questions.count == 1 else { return nil }
        let q = m.questions[0]
        return DNSResolverResponse(id: m.id, rcode: Int(m.responseCode.rawValue), truncated: m.isTruncated,
                                   questionName: lowercasedName(q.name), questionType: q.type.rawValue,
                                   answers: m.answers.compactMap(record), additional: m.additionals.compactMap(record),
                                   negativeTTL: m.negativeCacheTTL)
    }

    static func record(_ r: DNSResourceRecord) -> DNSResolverRecord? {
        guard r.recordClass == 1 else { return nil }
        let data: DNSResolverRecord.Data
        switch r.data {
        case .a(let b) where b.count == 4: data = .address(b)
        case .aaaa(let b) where b.count == 16: data = .address(b)
        case .mx(let p, let e): data = .mx(preference: p, exchange: lowercasedName(e))
        case .cname(let t): data = .cname(lowercasedName(t))
        default: return nil
        }
        return DNSResolverRecord(name: lowercasedName(r.name), ttl: r.ttl, data: data)
    }

    static func lowercasedName(_ name: String) -> String {
        var n = name.lowercased()
        if n.hasSuffix(".") { n.removeLast() }
        return n
    }
}
