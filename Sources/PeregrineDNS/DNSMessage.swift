/// A DNS message (RFC 1035 §4), both directions: the MTA's resolver encodes
/// queries and decodes responses; the sink's responder does the reverse.
///
/// Names are dotted text without the trailing dot; case is preserved (compare
/// case-insensitively). Bytes outside printable ASCII, `.` and `\` inside a
/// label are written `\DDD` / `\.` / `\\` and encoded back the same way.
public struct DNSMessage: Hashable, Sendable {
    public var id: UInt16
    public var isResponse: Bool
    public var opcode: UInt8
    public var isAuthoritative: Bool
    /// TC: the answer did not fit (over UDP: retry over TCP or live with what came).
    public var isTruncated: Bool
    public var recursionDesired: Bool
    public var recursionAvailable: Bool
    public var responseCode: DNSResponseCode
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authorities: [DNSResourceRecord]
    public var additionals: [DNSResourceRecord]

    public init(id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, isAuthoritative: Bool = false,
                isTruncated: Bool = false, recursionDesired: Bool = true, recursionAvailable: Bool = false,
                responseCode: DNSResponseCode = .noError, questions: [DNSQuestion] = [],
                answers: [DNSResourceRecord] = [], authorities: [DNSResourceRecord] = [],
                additionals: [DNSResourceRecord] = []) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.responseCode = responseCode
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    /// A standard recursive query for one name and type.
    public static func query(id: UInt16, name: String, type: DNSRecordType) -> DNSMessage {
        DNSMessage(id: id, questions: [DNSQuestion(name: name, type: type)])
    }

    /// The skeleton of an answer to `query`: same id, question and RD flag.
    public static func response(to query: DNSMessage, code: DNSResponseCode = .noError,
                                answers: [DNSResourceRecord] = [], authoritative: Bool = true) -> DNSMessage {
        DNSMessage(id: query.id, isResponse: true, opcode: query.opcode, isAuthoritative: authoritative,
                   recursionDesired: query.recursionDesired, recursionAvailable: false,
                   responseCode: code, questions: query.questions, answers: answers)
    }

    /// MX records of the answer section, lowest preference first.
    public var mxRecords: [(preference: UInt16, exchange: String)] {
        answers.compactMap(\.mx).sorted { $0.preference < $1.preference }
    }

    /// Addresses (A and AAAA) of the answer section for `name` (any name when nil).
    public func addresses(for name: String? = nil) -> [String] {
        answers.filter { name == nil || $0.name.lowercased() == name?.lowercased() }.compactMap(\.ipAddress)
    }

    /// How long a negative answer may be cached: min(SOA TTL, SOA minimum) from the authority section.
    public var negativeCacheTTL: UInt32? {
        for record in authorities {
            if case .soa(let soa) = record.data { return min(record.ttl, soa.minimum) }
        }
        return nil
    }
}
