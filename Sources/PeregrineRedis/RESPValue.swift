/// One RESP2 reply. RESP2's null bulk string (`$-1`) and null array (`*-1`)
/// are both `.null`: no Redis command distinguishes them for a caller.
package enum RESPValue: Hashable, Sendable {
    case simple([UInt8])
    case error([UInt8])
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RESPValue])

    /// The error line's text (`ERR ...`, `NOSCRIPT ...`), if this is an error reply.
    package var errorText: String? {
        if case .error(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }

    /// An integer reply, or a bulk/simple string holding a decimal integer (GET of a counter).
    package var integerValue: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk(let b), .simple(let b): return RESPParser.parseInteger(b[...])
        default: return nil
        }
    }

    /// The bytes of a bulk or simple string.
    package var bytes: [UInt8]? {
        switch self {
        case .bulk(let b), .simple(let b): return b
        default: return nil
        }
    }

    package var stringValue: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }
}

extension RESPValue: CustomStringConvertible {
    package var description: String {
        switch self {
        case .simple(let b): return "+" + String(decoding: b, as: UTF8.self)
        case .error(let b): return "-" + String(decoding: b, as: UTF8.self)
        case .integer(let i): return ":\(i)"
        case .bulk(let b): return "$" + String(decoding: b, as: UTF8.self)
        case .null: return "(nil)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
