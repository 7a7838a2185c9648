/// An HTTP response the handler returns; `serialize` turns it into bytes.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var reason: String
    /// Extra header fields. `Content-Length`, `Connection` and (when absent) `Date`-less
    /// defaults are added by `serialize`; don't set `Content-Length` yourself.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// The connection's last answer (`Connection: close`), e.g. a refusal during shutdown.
    public var closesConnection = false

    public init(status: Int, reason: String? = nil, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.reason = reason ?? HTTPResponse.reasonPhrase(status)
        self.headers = headers
        self.body = body
    }

    /// A JSON body (`application/json`), already encoded by the caller.
    public static func json(_ text: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")], body: Array(text.utf8))
    }

    public static func text(_ text: String, status: Int = 200, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", contentType)], body: Array(text.utf8))
    }

    /// A JSON error body `{"error":"…"}`.
    public static func error(_ status: Int, _ message: String) -> HTTPResponse {
        json("{\"error\":\"\(HTTPResponse.jsonEscape(message))\"}", status: status)
    }

    public static func notFound(_ path: String) -> HTTPResponse { error(404, "no such resource: \(path)") }
    public static func methodNotAllowed(_ allowed: [String]) -> HTTPResponse {
        var r = error(405, "method not allowed")
        r.headers.append(("Allow", allowed.joined(separator: ", ")))
        return r
    }

    /// The status line, headers and body as bytes. `includeBody: false` for HEAD.
    public func serialize(keepAlive: Bool, includeBody: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128 + body.count)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        out.append(contentsOf: String(status).utf8)
        out.append(32)
        out.append(contentsOf: HTTPResponse.sanitized(reason).utf8)
        out.append(contentsOf: "\r\n".utf8)
        for (name, value) in headers {
            let lower = name.lowercased()
            if lower == "content-length" || lower == "connection" { continue }
            out.append(contentsOf: HTTPResponse.sanitized(name).utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: HTTPResponse.sanitized(value).utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "Content-Length: \(body.count)\r\n".utf8)
        out.append(contentsOf: (keepAlive ? "Connection: keep-alive\r\n" : "Connection: close\r\n").utf8)
        out.append(contentsOf: "\r\n".utf8)
        if includeBody { out.append(contentsOf: body) }
        return out
    }

    /// CR and LF cannot appear in a header (response splitting).
    static func sanitized(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { return s }
        return String(s.unicodeScalars.map { $0 == "\r" || $0 == "\n" ? " " : Character($0) })
    }

    /// Escapes a string for inclusion inside JSON double quotes.
    public static func jsonEscape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 422: return "Unprocessable Content"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }
}
