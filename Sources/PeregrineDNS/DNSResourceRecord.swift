import PeregrineIO

/// A question: name, type, class (1 = IN).
public struct DNSQuestion: Hashable, Sendable {
    public var name: String
    public var type: DNSRecordType
    public var recordClass: UInt16

    public init(name: String, type: DNSRecordType, recordClass: UInt16 = 1) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// SOA data; in a negative answer its `minimum` bounds how long to cache the "no".
public struct DNSStartOfAuthority: Hashable, Sendable {
    public var primaryServer: String
    public var responsibleMailbox: String
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    public var minimum: UInt32

    public init(primaryServer: String, responsibleMailbox: String, serial: UInt32,
                refresh: UInt32, retry: UInt32, expire: UInt32, minimum: UInt32) {
        self.primaryServer = primaryServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// Decoded RDATA. Types the MTA does not use are kept as raw bytes.
public enum DNSRecordData: Hashable, Sendable {
    /// 4 bytes, network order.
    case a([UInt8])
    /// 16 bytes, network order.
    case aaaa([UInt8])
    case mx(preference: UInt16, exchange: String)
    case cname(String)
    case ns(String)
    case ptr(String)
    case txt([[UInt8]])
    case soa(DNSStartOfAuthority)
    case unknown([UInt8])
}

/// A resource record of the answer, authority or additional section.
public struct DNSResourceRecord: Hashable, Sendable {
    public var name: String
    public var type: DNSRecordType
    public var recordClass: UInt16
    public var ttl: UInt32
    public var data: DNSRecordData

    /// `type` is derived from `data` except for `.unknown`, which needs `unknownType`.
    public init(name: String, ttl: UInt32, data: DNSRecordData, recordClass: UInt16 = 1,
                unknownType: DNSRecordType = DNSRecordType(rawValue: 0)) {
        self.name = name
        self.ttl = ttl
        self.data = data
        self.recordClass = recordClass
        switch data {
        case .a: type = .a
        case .aaaa: type = .aaaa
        case .mx: type = .mx
        case .cname: type = .cname
        case .ns: type = .ns
        case .ptr: type = .ptr
        case .txt: type = .txt
        case .soa: type = .soa
        case .unknown: type = unknownType
        }
    }

    /// `(preference, exchange)` of an MX record.
    public var mx: (preference: UInt16, exchange: String)? {
        if case .mx(let p, let e) = data { return (p, e) }
        return nil
    }

    /// The numeric address of an A or AAAA record, as text for `SocketAddress(ip:port:)`.
    public var ipAddress: String? {
        switch data {
        case .a(let b) where b.count == 4: return b.map(String.init).joined(separator: ".")
        case .aaaa(let b) where b.count == 16:
            return IPNetwork(address: b, prefixLength: 128).description.split(separator: "/").first.map(String.init)
        default: return nil
        }
    }
}
