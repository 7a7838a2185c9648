/// Why a DNS packet could not be decoded or encoded. Decoding never traps:
/// every malformed input (peer-controlled) ends in one of these.
public enum DNSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The packet ends before `what` at `offset`.
    case truncated(what: String, offset: Int)
    /// A compression pointer at `offset` points forward or to itself (a loop in the making).
    case badPointer(offset: Int, target: Int)
    /// More compression jumps in one name than any sane packet needs.
    case tooManyPointers(offset: Int)
    /// Label length byte with the reserved 0x40/0x80 bits.
    case badLabelType(offset: Int, byte: UInt8)
    /// A name longer than 255 bytes on the wire.
    case nameTooLong(offset: Int)
    /// RDATA whose contents do not fill exactly its RDLENGTH.
    case badRecordData(type: DNSRecordType, offset: Int)
    /// A name that cannot be encoded (empty or over-long label, bad escape).
    case badName(String)
    /// Record data that cannot be encoded (e.g. an A record without 4 bytes).
    case badData(String)
    /// More than 65535 entries in a section, or an RDATA over 65535 bytes.
    case tooLarge(String)

    public var description: String {
        switch self {
        case .truncated(let what, let offset): return "DNS packet truncated in \(what) at offset \(offset)"
        case .badPointer(let offset, let target): return "DNS compression pointer at offset \(offset) to \(target) does not point backwards"
        case .tooManyPointers(let offset): return "too many DNS compression pointers in the name at offset \(offset)"
        case .badLabelType(let offset, let byte): return "reserved DNS label type 0x\(String(byte, radix: 16)) at offset \(offset)"
        case .nameTooLong(let offset): return "DNS name at offset \(offset) is longer than 255 bytes"
        case .badRecordData(let type, let offset): return "malformed \(type) record data at offset \(offset)"
        case .badName(let name): return "cannot encode DNS name '\(name)'"
        case .badData(let what): return "cannot encode DNS record data: \(what)"
        case .tooLarge(let what): return "DNS message too large: \(what)"
        }
    }
}
