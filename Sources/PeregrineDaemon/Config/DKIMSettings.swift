import PeregrineConfig
import PeregrineDKIM

/// `domain-key SELECTOR,DOMAIN,KEYFILE`: a private key for `d=DOMAIN; s=SELECTOR`.
public struct DKIMDomainKey: Hashable, Sendable {
    public var selector: String
    public var domain: String
    public var keyPath: String
    public var location: ConfigLocation
}

/// A DKIM signing identity named in the config (`dkim-identity`,
/// `dkim-identity-fallback`): the keys of `domain` or a parent of it sign,
/// with `i=auid`.
public struct DKIMAgentIdentity: Hashable, Sendable {
    /// `user@domain` or `@domain`.
    public var auid: String
    public var domain: String
}

/// `dkim-identity` (PowerMTA's; default `sender-or-from`): whose keys sign.
public enum DKIMIdentityRule: Hashable, Sendable {
    /// The keys aligned with the message's From domain, no `i=`. Peregrine
    /// reads From only (not Sender): DMARC aligns with From.
    case senderOrFrom
    /// The keys of this identity's domain (or a parent), with its `i=`,
    /// whatever the From domain (third-party signing).
    case fixed(DKIMAgentIdentity)
}

/// The DKIM directives of one scope (`<source>`, `<virtual-mta>`, `<domain>`;
/// PowerMTA's names plus `dkim-canonicalization` and
/// `dkim-also-sign-as`). Unset values (nil) fall through to the next scope:
/// source, then virtual-mta, then the recipient's `<domain>`, then `<domain *>`.
public struct DKIMSettings: Hashable, Sendable {
    /// `domain-key` lines (repeatable: one per key, e.g. RSA and Ed25519 for one domain).
    public var keys: [DKIMDomainKey] = []
    /// `dkim-sign yes|no`.
    public var sign: Bool?
    /// `dkim-headers from,to,subject,…` (or `:`-separated): the fields signed when present.
    public var headers: [String]?
    /// `dkim-body-length-limit yes|no`: add `l=` (off by default).
    public var bodyLengthLimit: Bool?
    /// `dkim-expire-after DURATION|never`: add `x=`.
    public var expireAfter: Duration??
    /// `dkim-canonicalization relaxed/relaxed` (header/body; default relaxed/relaxed).
    public var canonicalization: DKIMCanonicalizations?
    /// `dkim-required yes|no`: refuse (550 5.7.1) a message with no key aligned with its From domain.
    public var required: Bool?
    /// `dkim-also-sign-as DOMAIN`: also sign with this domain's keys whatever
    /// the From domain (the ESP's own signature beside the customer's).
    public var alsoSignAs: String?
    /// `dkim-identity {ADDRESS|DOMAIN|sender-or-from}`.
    public var identity: DKIMIdentityRule?
    /// `dkim-identity-fallback {ADDRESS|DOMAIN}`: signs when `dkim-identity`'s
    /// identity has no key (e.g. a customer's From domain without one).
    public var identityFallback: DKIMAgentIdentity?

    public init() {}

    public static let directiveNames = [
        "domain-key", "dkim-sign", "dkim-headers", "dkim-body-length-limit", "dkim-expire-after",
        "dkim-canonicalization", "dkim-required", "dkim-also-sign-as", "dkim-identity", "dkim-identity-fallback",
    ]

    /// Repeatable in one block (the block's "already set" check skips them).
    public static let repeatableDirectives: Set<String> = ["domain-key"]

    public var isEmpty: Bool { self == DKIMSettings() }

    /// Applies one directive; false when `node` is not a DKIM directive.
    public mutating func apply(_ node: ConfigNode) throws(ConfigError) -> Bool {
        switch node.name {
        case "domain-key":
            let parts = node.arguments.joined(separator: " ").split(separator: ",", omittingEmptySubsequences: false)
                .map { String($0).trimmedOf(" \t") }
            guard parts.count == 3, !parts[0].isEmpty, !parts[2].isEmpty else {
                throw node.error("domain-key expects SELECTOR,DOMAIN,KEYFILE, got '\(node.rawArguments)'")
            }
            guard parts[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) else {
                throw node.error("domain-key: '\(parts[0])' is not a DKIM selector")
            }
            let domain = try node.parse(parts[1], ConfigValue.domainName)
            keys.append(DKIMDomainKey(selector: parts[0], domain: domain, keyPath: parts[2], location: node.location))
        case "dkim-sign": sign = try node.value(ConfigValue.bool)
        case "dkim-headers":
            let names = node.arguments.joined(separator: ",").split(whereSeparator: { $0 == "," || $0 == ":" })
                .map { String($0).trimmedOf(" \t").lowercased() }.filter { !$0.isEmpty }
            guard !names.isEmpty else { throw node.error("dkim-headers lists no header fields") }
            for name in names where !name.allSatisfy({ $0.isASCII && $0 != " " && $0 != ":" && ($0.asciiValue ?? 0) > 32 }) {
                throw node.error("dkim-headers: '\(name)' is not a header field name")
            }
            headers = names
        case "dkim-body-length-limit": bodyLengthLimit = try node.value(ConfigValue.bool)
        case "dkim-expire-after":
            let d = try node.value(ConfigValue.durationOrNever)
            if let d, d < .seconds(1) { throw node.error("dkim-expire-after must be at least 1s (or never)") }
            expireAfter = .some(d)
        case "dkim-canonicalization":
            guard let c = DKIMCanonicalizations(tag: try node.singleArgument()) else {
                throw node.error("dkim-canonicalization: expected relaxed/relaxed, simple/simple, relaxed/simple or simple/relaxed")
            }
            canonicalization = c
        case "dkim-required": required = try node.value(ConfigValue.bool)
        case "dkim-also-sign-as": alsoSignAs = try node.value(ConfigValue.domainName)
        case "dkim-identity":
            let text = try node.singleArgument()
            identity = text.lowercased() == "sender-or-from" ? .senderOrFrom : .fixed(try Self.agentIdentity(node, text))
        case "dkim-identity-fallback":
            let text = try node.singleArgument()
            guard text.lowercased() != "sender-or-from" else {
                throw node.error("dkim-identity-fallback names an identity (ADDRESS or DOMAIN); sender-or-from is dkim-identity's default")
            }
            identityFallback = try Self.agentIdentity(node, text)
        default: return false
        }
        return true
    }
}

extension DKIMSettings {
    /// `user@domain`, `@domain` or `domain` as an `i=` identity. The local
    /// part is limited to atext without `=` (and dots between atoms), so `i=`
    /// needs no dkim-quoted-printable encoding.
    static func agentIdentity(_ node: ConfigNode, _ text: String) throws(ConfigError) -> DKIMAgentIdentity {
        let at = text.lastIndex(of: "@")
        let local = at.map { String(text[..<$0]) } ?? ""
        let domain = try node.parse(at.map { String(text[text.index(after: $0)...]) } ?? text, ConfigValue.domainName)
        let allowed = Set("!#$%&'*+-/?^_`{|}~.".utf8)
        let atoms = local.split(separator: ".", omittingEmptySubsequences: false)
        guard local.utf8.count <= 64,
              local.isEmpty || atoms.allSatisfy({ !$0.isEmpty }),
              local.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || allowed.contains($0) }) else {
            throw node.error("\(node.name): '\(local)' is not a local part DKIM's i= can carry (letters, digits, dots and !#$%&'*+-/?^_`{|}~)")
        }
        return DKIMAgentIdentity(auid: local + "@" + domain, domain: domain)
    }
}

extension String {
    fileprivate func trimmedOf(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

/// Every `domain-key` file of a config, loaded once at load (and so again on
/// reload): the daemon never parses a PEM file while mail flows. Equality is
/// by the loaded key objects, so a reload that reads the files again yields a
/// different ring.
public struct DKIMKeyRing: Hashable, Sendable {
    public private(set) var byPath: [String: DKIMPrivateKey] = [:]

    public init() {}

    public subscript(path: String) -> DKIMPrivateKey? { byPath[path] }

    /// Loads `key` unless its file is loaded already; a missing, unreadable
    /// or bad file is an error at the directive's line.
    mutating func load(_ key: DKIMDomainKey) throws(ConfigError) {
        if byPath[key.keyPath] != nil { return }
        do {
            byPath[key.keyPath] = try DKIMPrivateKey.load(path: key.keyPath)
        } catch {
            throw ConfigError(key.location, "domain-key \(key.selector),\(key.domain): \(error.description)", directive: "domain-key")
        }
    }

    public static func == (a: DKIMKeyRing, b: DKIMKeyRing) -> Bool {
        a.byPath.count == b.byPath.count && a.byPath.allSatisfy { b.byPath[$0.key] === $0.value }
    }

    public func hash(into hasher: inout Hasher) {
        for path in byPath.keys.sorted() { hasher.combine(path) }
    }
}

extension PeregrineConfig {
    /// Every scope's DKIM settings, for loading their keys.
    var allDKIMSettings: [DKIMSettings] {
        var all: [DKIMSettings] = sources.map(\.dkim) + virtualMTAs.map(\.dkim)
        all += virtualMTAs.flatMap { $0.domains.map(\.dkim) } + domains.map(\.dkim)
        return all + httpInjection.keys.map(\.dkim)
    }

    /// Loads every domain-key file (each path once), recording each failure at its line.
    mutating func loadDKIMKeys(diagnostics: inout ConfigDiagnostics) {
        dkimConfigured = allDKIMSettings.contains { !$0.isEmpty }
        for settings in allDKIMSettings {
            for key in settings.keys {
                do { try dkimKeys.load(key) } catch { diagnostics.record(error) }
            }
        }
    }
}
