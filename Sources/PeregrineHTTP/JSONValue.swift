import PeregrineIO

/// A parsed JSON document (RFC 8259), for API request bodies.
///
/// Its own parser rather than Foundation's: a client sending bad JSON is told
/// the byte offset of the fault (Foundation reports line and column in
/// text that varies between versions), duplicate object keys are refused
/// instead of silently keeping one, numbers keep whether they were integers,
/// and nesting is bounded so a hostile body cannot exhaust the stack.
public indirect enum JSONValue: Hashable, Sendable {
    case null
    case bool(Bool)
    /// The number as written is kept for integers (`integer`); others as Double.
    case number(Double, integer: Int64?)
    case string(String)
    case array([JSONValue])
    /// Members in document order (keys unique).
    case object([(key: String, value: JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x, _), .number(let y, _)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x.elementsEqual(y, by: { $0.key == $1.key && $0.value == $1.value })
        default: return false
        }
    }

    public func hash(into h: inout Hasher) {
        switch self {
        case .null: h.combine(0)
        case .bool(let b): h.combine(b)
        case .number(let d, _): h.combine(d)
        case .string(let s): h.combine(s)
        case .array(let a): h.combine(a)
        case .object(let o): for (k, v) in o { h.combine(k); h.combine(v) }
        }
    }

    /// The member named `key` of an object; nil otherwise.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// `"string"`, `"number"`, … as error messages name a type.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

/// Why a body is not JSON, and where (0-based byte offset into the body).
public struct JSONParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "\(reason) at byte offset \(offset)" }
}

public enum JSONParser {
    /// Deepest nesting of arrays and objects accepted.
    public static let maxDepth = 64

    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var p = Cursor(bytes: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw p.fail("unexpected data after the JSON value") }
        return v
    }

    struct Cursor {
        let bytes: [UInt8]
        var i = 0

        func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: i, reason: reason) }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 10 || bytes[i] == 13 { i += 1 }
        }

        mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
            guard i < bytes.count else { throw fail("unexpected end of input") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                guard depth < JSONParser.maxDepth else { throw fail("nested deeper than \(JSONParser.maxDepth) levels") }
                return try object(depth: depth + 1)
            case UInt8(ascii: "["):
                guard depth < JSONParser.maxDepth else { throw fail("nested deeper than \(JSONParser.maxDepth) levels") }
                return try array(depth: depth + 1)
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), 48...57:
                return try number()
            default:
                throw fail("unexpected character '\(Self.printable(bytes[i]))'")
            }
        }

        static func printable(_ b: UInt8) -> String {
            b >= 0x20 && b < 0x7f ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16)
        }

        mutating func literal(_ word: String) throws(JSONParseError) {
            let start = i
            for c in word.utf8 {
                guard i < bytes.count, bytes[i] == c else {
                    throw JSONParseError(offset: start, reason: "invalid literal (expected '\(word)')")
                }
                i += 1
            }
        }

        mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
            i += 1
            var members: [(key: String, value: JSONValue)] = []
            var keys = Set<String>()
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let keyOffset = i
                let key = try string()
                guard keys.insert(key).inserted else {
                    throw JSONParseError(offset: keyOffset, reason: "duplicate key '\(key)'")
                }
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':' after an object key") }
                i += 1
                skipSpace()
                members.append((key, try value(depth: depth)))
                skipSpace()
                guard i < bytes.count else { throw fail("unexpected end of input in an object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                throw fail("expected ',' or '}' in an object")
            }
        }

        mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth))
                skipSpace()
                guard i < bytes.count else { throw fail("unexpected end of input in an array") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("expected ',' or ']' in an array")
            }
        }

        mutating func hex4() throws(JSONParseError) -> UInt32 {
            guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let d = bytes[i].hexDigitValue else { throw fail("invalid hex digit in a \\u escape") }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        mutating func string() throws(JSONParseError) -> String {
            i += 1
            var out: [UInt8] = []
            let start = i
            // Fast path: no escapes.
            while i < bytes.count, bytes[i] != UInt8(ascii: "\""), bytes[i] != UInt8(ascii: "\\"), bytes[i] >= 0x20 { i += 1 }
            out.append(contentsOf: bytes[start..<i])
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw fail("control character in a string (escape it)") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard i < bytes.count else { throw fail("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5c)
                case UInt8(ascii: "/"): out.append(0x2f)
                case UInt8(ascii: "b"): out.append(8)
                case UInt8(ascii: "f"): out.append(12)
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate in a \\u escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate in a \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("unpaired surrogate in a \\u escape")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                    out.append(contentsOf: String(u).utf8)
                default:
                    i -= 2   // at the backslash
                    throw fail("invalid escape '\\\(Self.printable(e))'")
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else {
                throw JSONParseError(offset: start, reason: "string is not valid UTF-8")
            }
            return s
        }

        mutating func number() throws(JSONParseError) -> JSONValue {
            let start = i
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, (48...57).contains(bytes[i]) else { throw fail("invalid number") }
            if bytes[i] == 48 { i += 1 } else { while i < bytes.count, (48...57).contains(bytes[i]) { i += 1 } }
            var integral = true
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                integral = false
                i += 1
                guard i < bytes.count, (48...57).contains(bytes[i]) else { throw fail("invalid number (digits expected after '.')") }
                while i < bytes.count, (48...57).contains(bytes[i]) { i += 1 }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                integral = false
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard i < bytes.count, (48...57).contains(bytes[i]) else { throw fail("invalid number (exponent digits expected)") }
                while i < bytes.count, (48...57).contains(bytes[i]) { i += 1 }
            }
            let text = String(decoding: bytes[start..<i], as: UTF8.self)
            guard let d = Double(text) else { throw JSONParseError(offset: start, reason: "invalid number") }
            // 1e400 is valid JSON syntax but no Double: refused (RFC 8259 §6 lets a parser limit the range)
            // rather than kept as infinity, which has no JSON form to give back (found by FuzzHTTPInjection).
            guard d.isFinite else { throw JSONParseError(offset: start, reason: "number out of range") }
            return .number(d, integer: integral ? Int64(text) : nil)
        }
    }
}

extension JSONValue {
    /// Compact JSON text (what responses send).
    public var serialized: String {
        var out = ""
        write(into: &out)
        return out
    }

    func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let d, let i):
            if let i { out += String(i) } else if d.isFinite { out += "\(d)" } else { out += "null" }
        case .string(let s): out += "\"" + HTTPResponse.jsonEscape(s) + "\""
        case .array(let a):
            out += "["
            for (n, v) in a.enumerated() { if n > 0 { out += "," }; v.write(into: &out) }
            out += "]"
        case .object(let o):
            out += "{"
            for (n, m) in o.enumerated() {
                if n > 0 { out += "," }
                out += "\"" + HTTPResponse.jsonEscape(m.key) + "\":"
                m.value.write(into: &out)
            }
            out += "}"
        }
    }

    public static func int(_ v: Int) -> JSONValue { .number(Double(v), integer: Int64(v)) }
}
