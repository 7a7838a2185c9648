/// The checks every management request passes before the daemon acts on it
/// (issue 12 item 5): a web page the operator visits must not be able to
/// drive the API through the operator's browser, and a local process must
/// hold the token to change anything.
///
/// - `Host` must name the listener: its own address, `localhost`, a loopback
///   address, or one of `allowedHosts` (the daemon's host name). This stops
///   DNS rebinding. HTTP/1.0 requests without `Host` pass (HTTP/1.1 requires it).
/// - A request carrying `Origin` must come from that same host (`http://HOST[:PORT]`);
///   `Sec-Fetch-Site: cross-site|same-site` is refused too. Browsers send
///   these on cross-site requests; `curl` and `peregrine ctl` send neither.
/// - Every method other than GET and HEAD needs `Authorization: Bearer TOKEN`
///   with the daemon's token (401 otherwise), and a body, if any, of type
///   `application/json` or `application/x-www-form-urlencoded` (415 otherwise).
///
/// Pure: the daemon builds one and calls `refusal(for:)` per request.
public struct ManagementRequestGuard: Sendable {
    /// Lower-case host names or addresses (no port) accepted in `Host` and `Origin`, besides the defaults.
    public var allowedHosts: Set<String>
    /// The bearer token; nil: no mutating call is accepted at all.
    public var token: [UInt8]?

    /// The media types a request body may have.
    public static let acceptedContentTypes = ["application/json", "application/x-www-form-urlencoded"]

    public init(allowedHosts: Set<String> = [], token: [UInt8]?) {
        self.allowedHosts = Set(allowedHosts.map { $0.lowercased() })
        self.token = token
    }

    /// True for the methods that change nothing.
    public static func isReadOnly(_ method: String) -> Bool { method == "GET" || method == "HEAD" }

    /// The response that refuses `request`, or nil when it may proceed.
    public func refusal(for request: HTTPRequest) -> HTTPResponse? {
        if let host = request.header("Host") {
            guard let name = Self.hostName(ofAuthority: host), isAllowed(name, request) else {
                return .error(403, "Host '\(Self.printable(host))' is not this management listener")
            }
        }
        if let origin = request.header("Origin") {
            guard let authority = Self.authority(ofOrigin: origin), let name = Self.hostName(ofAuthority: authority),
                  isAllowed(name, request) else {
                return .error(403, "cross-origin request refused (Origin '\(Self.printable(origin))')")
            }
        }
        if let site = request.header("Sec-Fetch-Site")?.lowercased(), site == "cross-site" || site == "same-site" {
            return .error(403, "cross-site request refused (Sec-Fetch-Site: \(Self.printable(site)))")
        }
        guard !Self.isReadOnly(request.method) else { return nil }
        guard let token, !token.isEmpty, let presented = Self.bearerToken(request.header("Authorization")),
              Self.constantTimeEquals(presented, token) else {
            var r = HTTPResponse.error(401, "this call needs 'Authorization: Bearer TOKEN' with the token of "
                                       + "http-mgmt-token-file (peregrine ctl --config FILE reads it)")
            r.headers.append((name: "WWW-Authenticate", value: "Bearer realm=\"peregrine\""))
            return r
        }
        if !request.body.isEmpty {
            let type = Self.mediaType(request.header("Content-Type"))
            guard let type, Self.acceptedContentTypes.contains(type) else {
                return .error(415, "Content-Type must be application/json or application/x-www-form-urlencoded"
                              + (type.map { ", not \(Self.printable($0))" } ?? ""))
            }
        }
        return nil
    }

    private func isAllowed(_ name: String, _ request: HTTPRequest) -> Bool {
        if name == "localhost" || name == "::1" || Self.isLoopbackIPv4(name) || allowedHosts.contains(name) { return true }
        if let local = request.localAddress, local.ip.lowercased() == name { return true }
        return false
    }

    /// A dotted-quad in 127.0.0.0/8 (not a name that merely starts with "127.").
    static func isLoopbackIPv4(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) && (Int($0) ?? 256) <= 255 }
    }

    /// `example.com:8080` → `example.com`; `[::1]:80` → `::1`; nil when malformed.
    static func hostName(ofAuthority text: String) -> String? {
        let a = text.lowercased()
        guard !a.isEmpty, !a.contains(where: { $0 == " " || $0 == "/" || $0 == "@" || $0.asciiValue.map { $0 < 0x21 || $0 > 0x7e } ?? true }) else {
            return nil
        }
        if a.hasPrefix("[") {
            guard let close = a.firstIndex(of: "]") else { return nil }
            let rest = a[a.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return nil }
            return String(a[a.index(after: a.startIndex)..<close])
        }
        let parts = a.split(separator: ":", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return a
        case 2: return parts[1].allSatisfy(\.isNumber) && !parts[0].isEmpty ? String(parts[0]) : nil
        default: return nil
        }
    }

    /// `http://host:port` → `host:port`; nil for `null`, another scheme or a path.
    static func authority(ofOrigin text: String) -> String? {
        let o = text.lowercased()
        guard o.hasPrefix("http://") else { return nil }
        let rest = o.dropFirst("http://".count)
        guard !rest.isEmpty, !rest.contains("/") else { return nil }
        return String(rest)
    }

    /// The token of `Bearer TOKEN` (scheme case-insensitive).
    static func bearerToken(_ header: String?) -> [UInt8]? {
        guard let h = header else { return nil }
        let parts = h.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let t = parts[1].trimmingSpaces
        return t.isEmpty ? nil : Array(t.utf8)
    }

    /// `application/JSON; charset=utf-8` → `application/json`.
    package static func mediaType(_ header: String?) -> String? {
        guard let h = header else { return nil }
        let t = (h.split(separator: ";", maxSplits: 1).first ?? "").trimmingSpaces.lowercased()
        return t.isEmpty ? nil : t
    }

    /// Compares without an early exit, so the time taken says nothing about the token.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<b.count { diff |= (i < a.count ? a[i] : 0) ^ b[i] }
        return diff == 0
    }

    /// At most 80 printable ASCII characters of peer text, for a reply.
    static func printable(_ s: String) -> String {
        String(String.UnicodeScalarView(s.unicodeScalars.prefix(80).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f ? $0 : "?" }))
    }
}
