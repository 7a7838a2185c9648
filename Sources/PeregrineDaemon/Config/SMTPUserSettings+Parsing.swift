import PeregrineIO
import PeregrineConfig

/// SMTP AUTH settings of the whole daemon: the `<smtp-user>` blocks and the
/// brute-force policy (Peregrine's own directives; PowerMTA has no equivalent).
public struct SMTPAuthSettings: Hashable, Sendable {
    /// `<smtp-user NAME>` blocks in file order (names are unique).
    public var users: [SMTPUserSettings] = []
    /// `smtp-auth-failure-delay DURATION` (default 1s): the n-th failed login
    /// from an address within `lockoutTime` is answered after n × this.
    public var failureDelay: Duration = .seconds(1)
    /// `smtp-auth-lockout-failures N` (default 10): at this many failures
    /// the address is locked out: AUTH gets 454 4.7.0 and the connection closes.
    public var lockoutFailures = 10
    /// `smtp-auth-lockout-time DURATION` (default 15m): how long a lockout
    /// lasts, and how long failures are remembered.
    public var lockoutTime: Duration = .seconds(15 * 60)

    public init() {}

    public func user(named name: String) -> SMTPUserSettings? {
        users.first { $0.name == name }
    }

    static let globalDirectiveNames = ["smtp-auth-failure-delay", "smtp-auth-lockout-failures", "smtp-auth-lockout-time"]
}

extension PeregrineConfig {
    /// True when AUTH is offered (some `<smtp-user>` exists).
    public var authEnabled: Bool { !auth.users.isEmpty }

    /// The rights of a client that logged in as `user` from `peer`: the
    /// user's named source, else the address's source plus relaying.
    public func source(forUser user: SMTPUserSettings, peer: SocketAddress) -> SourceSettings {
        if let name = user.source, let named = sources.first(where: { $0.name == name }) { return named }
        var s = source(forIP: peer.ip)
        s.alwaysAllowRelaying = true
        s.requireAuth = false
        return s
    }

    /// True when `domain` is listed by `relay-domain` (case-insensitive).
    public func isRelayDomain(_ domain: some StringProtocol) -> Bool {
        let d = domain.lowercased()
        return relayDomains.contains(d)
    }

    /// The globals of this file; false when `node` is not one of them.
    mutating func applyAuthGlobal(_ node: ConfigNode) throws(ConfigError) -> Bool {
        switch node.name {
        case "smtp-auth-failure-delay":
            auth.failureDelay = try node.value(ConfigValue.duration)
            guard auth.failureDelay <= .seconds(60) else {
                throw node.error("smtp-auth-failure-delay: '\(node.rawArguments)' is too long (at most 60s: the client waits n times this)")
            }
        case "smtp-auth-lockout-failures":
            auth.lockoutFailures = try node.integer(in: 1...1000)
        case "smtp-auth-lockout-time":
            auth.lockoutTime = try node.value(ConfigValue.duration)
            guard auth.lockoutTime >= .seconds(1) else {
                throw node.error("smtp-auth-lockout-time: '\(node.rawArguments)' is too short (at least 1s)")
            }
        case "relay-domain":
            for item in node.arguments.joined(separator: ",").split(separator: ",") {
                let d = try node.parse(String(item), ConfigValue.domainName).lowercased()
                if !relayDomains.contains(d) { relayDomains.append(d) }
            }
            guard !node.arguments.isEmpty else { throw node.error("relay-domain needs a domain name") }
        default:
            return false
        }
        return true
    }

    /// `<smtp-user>`: unique names; `source {NAME}` names a `<source {NAME}>`.
    mutating func applySMTPUser(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        guard let user = try SMTPUserSettings.parse(block: node, diagnostics: &diagnostics) else { return }
        if let first = auth.user(named: user.name) {
            throw node.error("<smtp-user \(user.name)> is already defined at line \(first.location?.line ?? 0)")
        }
        auth.users.append(user)
    }

    /// Cross-checks once the whole file is read.
    func checkAuth(nodes: [ConfigNode], diagnostics: inout ConfigDiagnostics) {
        for user in auth.users {
            guard let name = user.source else { continue }
            if !sources.contains(where: { $0.name == name }) {
                let node = nodes.first { $0.isBlock && $0.name == "smtp-user" && $0.arguments.first == user.name }
                let at = node?.children.first { $0.name == "source" }?.location ?? user.location
                diagnostics.record(ConfigError(at ?? ConfigLocation(file: "?", line: 0),
                                               "source: '{\(name)}' is not a defined <source {\(name)}> block"))
            }
        }
        guard !authEnabled else { return }
        for s in sources where s.requireAuth {
            let node = nodes.first { $0.isBlock && $0.location == s.location }
            let at = node?.children.first { $0.name == "require-auth" }?.location ?? s.location
            diagnostics.record(ConfigError(at ?? ConfigLocation(file: "?", line: 0),
                                           "require-auth yes, but no <smtp-user> is defined: no client of this source could send"))
        }
    }
}
