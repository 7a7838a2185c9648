import PeregrineIO
import PeregrineConfig
import PeregrineTLS
import PeregrineSpool

/// `<api-key NAME>`: a credential for the HTTP injection API and the rights it grants.
///
///     <api-key shop>
///         key-hash $pbkdf2-sha256$600000$SALT$HASH   # 'peregrine passwd' of the secret
///         default-virtual-mta pool-a                 # a <virtual-mta> or <virtual-mta-pool>
///         max-message-size 10M
///         allowed-sender-domain shop.example, news.shop.example
///         max-msg-rate 1000/m                        # messages (one per recipient message)
///         max-rcpt-per-message 1000                  # recipients in one call
///         verp-default yes                           # VERP every message, as in <source>
///         tenant shop                                # its requests' tenant (suppression scope)
///         domain-key sel,shop.example,/etc/peregrine/shop.pem   # DKIM directives as in <source>
///     </api-key>
///
/// Clients send `Authorization: Bearer NAME:SECRET` (or Basic with NAME and SECRET).
public struct APIKeySettings: Hashable, Sendable {
    public var name: String
    public var secret: PasswordHash
    public var defaultVirtualMTA: String?
    /// Bytes of the finished message (after MIME building); 0: no limit beyond the request size.
    public var maxMessageSize = 0
    /// Lower-case domains the envelope sender and From may use (a parent
    /// listed covers its subdomains); empty: any.
    public var allowedSenderDomains: [String] = []
    public var maxMsgRate: Rate = .unlimited
    public var maxRecipients = 1000
    /// `verp-default yes`: every message this key injects is VERPed (one
    /// recipient per transaction, the recipient in the return path), as
    /// `verp-default` in a `<source>` does for SMTP clients.
    public var verpDefault = false
    /// `tenant NAME`: the tenant every request of this key is for (its
    /// suppression scope, and X-Tenant-ID); a request naming another gets 403.
    /// nil: the request's own `tenant` field, if any.
    public var tenant: String?
    /// DKIM directives of this key's scope (first in the signer's scope list, as a `<source>`'s are).
    public var dkim = DKIMSettings()
    public var location: ConfigLocation?

    static let directiveNames = ["key-hash", "default-virtual-mta", "max-message-size", "allowed-sender-domain",
                                 "max-msg-rate", "max-rcpt-per-message", "verp-default", "tenant"] + DKIMSettings.directiveNames

    public init(name: String, secret: PasswordHash) { self.name = name; self.secret = secret }

    /// True when `domain` (lower-case) is allowed as a sender domain.
    public func allowsSender(domain: String) -> Bool {
        if allowedSenderDomains.isEmpty { return true }
        return allowedSenderDomains.contains { domain == $0 || domain.hasSuffix("." + $0) }
    }

    public static func parse(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) -> APIKeySettings? {
        let name = try block.arguments(count: 1...1, usage: "one key name, as in <api-key shop>")[0]
        guard !name.contains(":"), name.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f }) else {
            throw block.error("<api-key \(name)>: a key name is printable ASCII without ':' (clients send NAME:SECRET)")
        }
        var key = APIKeySettings(name: name, secret: PasswordHash(iterations: 0, salt: [], hash: []))
        var hasSecret = false
        var seen = ConfigDirectiveLines(repeatable: DKIMSettings.repeatableDirectives.union(["allowed-sender-domain"]))
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do throws(ConfigError) {
                if try key.dkim.apply(node) { continue }
                switch node.name {
                case "key-hash":
                    let text = try node.singleArgument()
                    key.secret = try node.parse(text) { (t: String) throws(ConfigValueError) -> PasswordHash in
                        do { return try PasswordHash(parsing: t) } catch { throw ConfigValueError("\(error)") }
                    }
                    hasSecret = true
                case "default-virtual-mta":
                    key.defaultVirtualMTA = try node.singleArgument().lowercased()
                case "max-message-size":
                    key.maxMessageSize = try node.value { (text: String) throws(ConfigValueError) -> Int in
                        text.lowercased() == "unlimited" ? 0 : try ConfigValue.size(text)
                    }
                case "allowed-sender-domain":
                    guard !node.arguments.isEmpty else { throw node.error("allowed-sender-domain needs a domain name") }
                    for item in node.arguments.joined(separator: ",").split(separator: ",") {
                        let d = try node.parse(String(item).trimmingCharacters(of: " \t"), ConfigValue.domainName).lowercased()
                        if !key.allowedSenderDomains.contains(d) { key.allowedSenderDomains.append(d) }
                    }
                case "max-msg-rate":
                    key.maxMsgRate = try node.value(ConfigValue.rate)
                case "max-rcpt-per-message":
                    key.maxRecipients = try node.integer(in: 1...100_000)
                case "verp-default":
                    key.verpDefault = try node.value(ConfigValue.bool)
                case "tenant":
                    let name = try node.singleArgument()
                    guard SuppressionKey.normaliseTenant(name) != nil else {
                        throw node.error("tenant: '\(name)' is not a tenant name (1-128 printable ASCII characters without spaces)")
                    }
                    key.tenant = name
                default:
                    throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
                }
            } catch {
                diagnostics.record(error)
            }
        }
        guard hasSecret else {
            if !seen.contains("key-hash") {
                throw block.error("\(block.displayName) needs key-hash (the output of 'peregrine passwd' for the key's secret)")
            }
            return nil
        }
        key.location = block.location
        return key
    }
}

/// The HTTP injection API's global settings (Peregrine's own directives; PowerMTA has no HTTP injection).
public struct HTTPInjectionSettings: Hashable, Sendable {
    /// `http-injection-listener ADDRESS:PORT`: nil, no API.
    public var listener: SocketAddress?
    /// `http-injection-listener ADDRESS:PORT tls=yes`: TLS from the first byte,
    /// with `smtp-server-tls-certificate`/`-key` (the injection listeners' certificate).
    public var tls = false
    /// `http-injection-max-request-size SIZE` (default 32M): a larger body gets 413 before it is read.
    public var maxRequestSize = 32 << 20
    /// `http-injection-timeout DURATION` (default 30s): a request must arrive
    /// whole within this of the connection opening or its previous answer
    /// (a client trickling its body is closed, never holding others up).
    public var requestTimeout: Duration = .seconds(30)
    /// `http-injection-max-connections N` per loop (default 64: each may hold a request of up to the max request size).
    public var maxConnections = 64
    public var keys: [APIKeySettings] = []

    public init() {}

    public func key(named name: String) -> APIKeySettings? { keys.first { $0.name == name } }

    static let globalDirectiveNames = ["http-injection-listener", "http-injection-max-request-size",
                                       "http-injection-timeout", "http-injection-max-connections"]
}

extension PeregrineConfig {
    /// The globals of this file; false when `node` is not one of them.
    mutating func applyHTTPInjectionGlobal(_ node: ConfigNode) throws(ConfigError) -> Bool {
        switch node.name {
        case "http-injection-listener":
            let args = try node.arguments(count: 1...2, usage: "ADDRESS:PORT [tls=yes|no]")
            let target = try node.parse(args[0], ConfigValue.hostPort)
            guard target.port != nil else {
                throw node.error("http-injection-listener: expected ADDRESS:PORT, got '\(args[0])'")
            }
            httpInjection.tls = false
            if args.count == 2 {
                let option = args[1].lowercased()
                guard option.hasPrefix("tls=") else {
                    throw node.error("http-injection-listener: unknown option '\(args[1])' (expected tls=yes or tls=no)")
                }
                httpInjection.tls = try node.parse(String(option.dropFirst(4)), ConfigValue.bool)
            }
            httpInjection.listener = try node.parse(args[0]) { (_: String) throws(ConfigValueError) -> SocketAddress in
                try target.socketAddress(defaultPort: 0)
            }
        case "http-injection-max-request-size":
            httpInjection.maxRequestSize = try node.value(ConfigValue.size)
            guard httpInjection.maxRequestSize >= 1024, httpInjection.maxRequestSize <= 1 << 30 else {
                throw node.error("http-injection-max-request-size: '\(node.rawArguments)' is not between 1K and 1G")
            }
        case "http-injection-timeout":
            httpInjection.requestTimeout = try node.value(ConfigValue.duration)
            guard httpInjection.requestTimeout >= .seconds(1) else {
                throw node.error("http-injection-timeout: '\(node.rawArguments)' is too short (at least 1s)")
            }
        case "http-injection-max-connections":
            httpInjection.maxConnections = try node.integer(in: 1...100_000)
        default:
            return false
        }
        return true
    }

    /// `<api-key>`: unique names.
    mutating func applyAPIKey(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        guard let key = try APIKeySettings.parse(block: node, diagnostics: &diagnostics) else { return }
        if let first = httpInjection.key(named: key.name) {
            throw node.error("<api-key \(key.name)> is already defined at line \(first.location?.line ?? 0)")
        }
        httpInjection.keys.append(key)
    }

    /// Cross-checks once the whole file is read: default-virtual-mta names a VMTA or pool.
    func checkHTTPInjection(nodes: [ConfigNode], diagnostics: inout ConfigDiagnostics) {
        if httpInjection.tls, serverTLS == nil,
           let node = nodes.last(where: { !$0.isBlock && $0.name == "http-injection-listener" }) {
            // The same certificate as the SMTP listeners' STARTTLS: one place to renew it.
            diagnostics.record(node.error("http-injection-listener tls=yes needs smtp-server-tls-certificate and smtp-server-tls-key"))
        }
        for key in httpInjection.keys {
            guard let name = key.defaultVirtualMTA else { continue }
            if virtualMTA(named: name) == nil && pool(named: name) == nil {
                let block = nodes.first { $0.isBlock && $0.name == "api-key" && $0.arguments.first == key.name }
                let at = block?.children.first { $0.name == "default-virtual-mta" }?.location ?? key.location
                diagnostics.record(ConfigError(at ?? ConfigLocation(file: "?", line: 0),
                                               "default-virtual-mta: '\(name)' is not a defined <virtual-mta> or <virtual-mta-pool>"))
            }
        }
        if httpInjection.listener == nil, let first = httpInjection.keys.first {
            diagnostics.warn(ConfigError(first.location ?? ConfigLocation(file: "?", line: 0),
                                         "<api-key \(first.name)> is defined but there is no http-injection-listener: no client can use it"))
        }
    }
}
