import PeregrineConfig

/// The event types a `<webhook>` can subscribe to (`events`), with their
/// one-byte code in the event log.
public enum WebhookEventType: UInt8, CaseIterable, Hashable, Sendable {
    case injected = 1, delivered = 2, bounced = 3, deferred = 4, expired = 5, complaint = 6, asyncBounce = 7

    /// The name in `events` and in the JSON `type` field.
    public var name: String {
        switch self {
        case .injected: return "injected"
        case .delivered: return "delivered"
        case .bounced: return "bounced"
        case .deferred: return "deferred"
        case .expired: return "expired"
        case .complaint: return "complaint"
        case .asyncBounce: return "async-bounce"
        }
    }

    public init?(name: String) {
        guard let t = Self.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = t
    }
}

/// `<webhook NAME>`: where and how delivery events are POSTed.
///
/// ```
/// <webhook orders>
///     url https://hooks.example.com/peregrine   # http or https (certificate and host name verified)
///     events delivered,bounced,expired          # default: all seven types
///     max-batch-events 100                      # events per POST (1..10000)
///     max-batch-delay 1s                        # how long a partial batch waits for more
///     secret "s3cr3t"                           # HMAC-SHA256 key; signature header (see WebhookSignature)
///     timeout 10s                               # connect + send + response, per POST
///     tls-ca-file /etc/peregrine/hooks-ca.pem   # trust store for https (default: the system's)
///     retry-initial-delay 1s                    # first backoff after a failure
///     retry-max-delay 5m                        # backoff ceiling
/// </webhook>
/// webhook-max-age 3d                            # older undelivered events go to accounting as `w` records
/// ```
public struct WebhookSettings: Hashable, Sendable {
    public var name: String
    public var url: WebhookURL
    public var events: Set<WebhookEventType> = Set(WebhookEventType.allCases)
    public var maxBatchEvents = 100
    public var maxBatchDelay: Duration = .seconds(1)
    public var secret: [UInt8]?
    public var timeout: Duration = .seconds(10)
    public var caFile: String?
    public var retryInitialDelay: Duration = .seconds(1)
    public var retryMaxDelay: Duration = .seconds(300)

    public init(name: String, url: WebhookURL) { self.name = name; self.url = url }

    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let args = try block.arguments(count: 1...1, usage: "a name, as in <webhook orders>")
        let name = args[0]
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }), name.count <= 64 else {
            throw block.error("<webhook \(name)>: the name may hold letters, digits, '-', '_' and '.' (at most 64)")
        }
        var url: WebhookURL?
        var seen = ConfigDirectiveLines()
        var parsed = WebhookSettings(name: name, url: WebhookURL(scheme: .http, host: "", port: 80, path: "/"))
        for node in try block.directivesOnly() {
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do throws(ConfigError) {
                switch node.name {
                case "url": url = try node.value(WebhookURL.parse)
                case "events":
                    var set = Set<WebhookEventType>()
                    for word in node.arguments.flatMap({ $0.split(separator: ",") }) {
                        guard let t = WebhookEventType(name: String(word)) else {
                            let names = WebhookEventType.allCases.map(\.name).joined(separator: ", ")
                            throw node.error("events: unknown event type '\(word)' (known: \(names))")
                        }
                        set.insert(t)
                    }
                    guard !set.isEmpty else { throw node.error("events needs at least one event type") }
                    parsed.events = set
                case "max-batch-events": parsed.maxBatchEvents = try node.integer(in: 1...10_000)
                case "max-batch-delay":
                    parsed.maxBatchDelay = try node.value(ConfigValue.duration)
                    guard parsed.maxBatchDelay <= .seconds(3600) else { throw node.error("max-batch-delay: at most 1h") }
                case "secret":
                    let s = try node.singleArgument()
                    guard !s.isEmpty else { throw node.error("secret must not be empty") }
                    parsed.secret = Array(s.utf8)
                case "timeout":
                    parsed.timeout = try node.value(ConfigValue.duration)
                    guard parsed.timeout >= .milliseconds(100) else { throw node.error("timeout: at least 100ms") }
                case "tls-ca-file": parsed.caFile = try node.readableFile()
                case "retry-initial-delay":
                    parsed.retryInitialDelay = try node.value(ConfigValue.duration)
                    guard parsed.retryInitialDelay >= .milliseconds(10) else { throw node.error("retry-initial-delay: at least 10ms") }
                case "retry-max-delay":
                    parsed.retryMaxDelay = try node.value(ConfigValue.duration)
                default:
                    throw node.error("unknown directive '\(node.name)' in <webhook \(name)>")
                }
            } catch { diagnostics.record(error) }
        }
        guard let url else {
            // A url line that did not parse is already reported at its own line.
            if seen.contains("url") { self = parsed; return }
            throw block.error("<webhook \(name)> needs a url (http://… or https://…)")
        }
        if parsed.retryMaxDelay < parsed.retryInitialDelay { parsed.retryMaxDelay = parsed.retryInitialDelay }
        if parsed.caFile != nil, url.scheme != .https {
            diagnostics.warn(block, "<webhook \(name)>: tls-ca-file applies to https URLs only; this url is http")
        }
        parsed.url = url
        self = parsed
    }
}

/// An `http://` or `https://` URL: host (name, IPv4 or [IPv6]), port, path+query.
public struct WebhookURL: Hashable, Sendable, CustomStringConvertible {
    public enum Scheme: String, Hashable, Sendable { case http, https }
    public var scheme: Scheme
    public var host: String
    public var port: UInt16
    public var path: String

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme.rawValue)://\(h):\(port)\(path)"
    }

    /// `Host:` header value.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return (scheme == .http && port == 80) || (scheme == .https && port == 443) ? h : "\(h):\(port)"
    }

    public static func parse(_ text: String) throws(ConfigValueError) -> WebhookURL {
        let scheme: Scheme
        var rest: Substring
        if text.lowercased().hasPrefix("http://") { scheme = .http; rest = text.dropFirst(7) }
        else if text.lowercased().hasPrefix("https://") { scheme = .https; rest = text.dropFirst(8) }
        else { throw ConfigValueError("'\(text)' is no http:// or https:// URL") }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let path = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard !authority.contains("@") else { throw ConfigValueError("'\(text)': user information in a URL is not supported") }
        var host: Substring, portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw ConfigValueError("'\(text)': unclosed [ in the host") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw ConfigValueError("'\(text)': unexpected '\(after)' after the host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]; portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw ConfigValueError("'\(text)': no host") }
        guard path.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "#" }) else {
            throw ConfigValueError("'\(text)': the path must be printable ASCII without spaces or a fragment")
        }
        var port: UInt16 = scheme == .https ? 443 : 80
        if let p = portText { port = try ConfigValue.port(String(p)) }
        return WebhookURL(scheme: scheme, host: String(host), port: port, path: path)
    }
}

extension PeregrineConfig {
    mutating func applyWebhook(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let hook = try WebhookSettings(block: node, diagnostics: &diagnostics)
        if webhooks.contains(where: { $0.name == hook.name }) {
            throw node.error("<webhook \(hook.name)> is defined twice")
        }
        webhooks.append(hook)
    }
}
