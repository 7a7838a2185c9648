import PeregrineIO

/// A parsed HTTP/1.1 request (the management API's input).
public struct HTTPRequest: Hashable, Sendable {
    /// `GET`, `POST`, … as sent (methods are case-sensitive, RFC 9110 §9.1).
    public var method: String
    /// The request target as sent, e.g. `/queues?pattern=gmail.com%2F*`.
    public var target: String
    /// The percent-decoded path, e.g. `/queues`.
    public var path: String
    /// Query parameters in order, percent-decoded (`+` as space).
    public var query: [(name: String, value: String)]
    /// `HTTP/1.1` → (1, 1).
    public var version: (major: Int, minor: Int)
    /// Header fields in order; names as sent, values trimmed.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// The client's address, set by `ManagementServer` (for `http-access` checks); nil from the bare parser.
    public var remoteAddress: SocketAddress? = nil
    /// The address the client connected to (for `Host`/`Origin` checks); nil from the bare parser.
    public var localAddress: SocketAddress? = nil

    public init(method: String, target: String, path: String, query: [(name: String, value: String)] = [],
                version: (major: Int, minor: Int) = (1, 1), headers: [(name: String, value: String)] = [],
                body: [UInt8] = []) {
        self.method = method; self.target = target; self.path = path; self.query = query
        self.version = version; self.headers = headers; self.body = body
    }

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { HTTPRequest.equalsIgnoringCase($0.name, name) }?.value
    }

    /// The first query parameter named `name`.
    public func queryParameter(_ name: String) -> String? {
        query.first { $0.name == name }?.value
    }

    /// Query parameters as a dictionary (the last value wins).
    public var queryParameters: [String: String] {
        var d: [String: String] = [:]
        for (k, v) in query { d[k] = v }
        return d
    }

    /// The body as UTF-8 text (invalid bytes replaced).
    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// Form fields of an `application/x-www-form-urlencoded` body.
    public var formParameters: [(name: String, value: String)] {
        HTTPRequest.parseQuery(Substring(bodyText))
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    public var keepAlive: Bool {
        let conn = header("Connection")?.lowercased() ?? ""
        let tokens = conn.split(separator: ",").map { $0.trimmingSpaces }
        if tokens.contains("close") { return false }
        if version.major == 1 && version.minor == 0 { return tokens.contains("keep-alive") }
        return true
    }

    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.method == b.method && a.target == b.target && a.path == b.path
            && a.query.elementsEqual(b.query, by: { $0 == $1 }) && a.version == b.version
            && a.headers.elementsEqual(b.headers, by: { $0 == $1 }) && a.body == b.body
    }

    public func hash(into h: inout Hasher) {
        h.combine(method); h.combine(target); h.combine(body)
    }

    static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        let x = a.utf8, y = b.utf8
        guard x.count == y.count else { return false }
        for (c, d) in zip(x, y) where c != d {
            let lc = (c >= 65 && c <= 90) ? c + 32 : c
            let ld = (d >= 65 && d <= 90) ? d + 32 : d
            if lc != ld { return false }
        }
        return true
    }

    /// Splits `a=1&b=x%2Fy` into decoded pairs; a name without `=` has an empty value.
    public static func parseQuery(_ text: Substring) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            if let eq = part.firstIndex(of: "=") {
                out.append((percentDecode(part[..<eq], plusAsSpace: true) ?? String(part[..<eq]),
                            percentDecode(part[part.index(after: eq)...], plusAsSpace: true) ?? String(part[part.index(after: eq)...])))
            } else {
                out.append((percentDecode(part, plusAsSpace: true) ?? String(part), ""))
            }
        }
        return out
    }

    /// Decodes `%XX` escapes; nil when an escape is malformed.
    public static func percentDecode(_ text: Substring, plusAsSpace: Bool) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var it = text.utf8.makeIterator()
        while let c = it.next() {
            if c == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let hv = h.hexDigitValue, let lv = l.hexDigitValue else { return nil }
                bytes.append(hv << 4 | lv)
            } else if plusAsSpace && c == UInt8(ascii: "+") {
                bytes.append(32)
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}
