import PeregrineConfig

/// A `<virtual-mta NAME>`: a sending identity (bind address and EHLO name)
/// with optional per-domain overrides nested inside it.
public struct VirtualMTASettings: Hashable, Sendable {
    public var name: String
    /// `smtp-source-host IP HOSTNAME`: the numeric bind address.
    public var sourceIP: String?
    /// `smtp-source-host IP HOSTNAME`: the name said in EHLO.
    public var hostName: String?
    /// Nested `<domain>` blocks, in file order.
    public var domains: [DomainBlock]
    /// `domain-key`, `dkim-sign`, …: signing for mail sent through this VMTA.
    public var dkim = DKIMSettings()
    /// `max-smtp-out` at VMTA level: connections of all this VMTA's queues
    /// together (a ConnectionBudget shared by the loops); nil = no such cap.
    public var maxSMTPOut: Int?
    public var location: ConfigLocation?

    public init(name: String, sourceIP: String? = nil, hostName: String? = nil,
                domains: [DomainBlock] = [], location: ConfigLocation? = nil) {
        self.name = name
        self.sourceIP = sourceIP
        self.hostName = hostName
        self.domains = domains
        self.location = location
    }
}

/// A `<virtual-mta-pool NAME>`: VMTAs used round-robin per message.
public struct VirtualMTAPool: Hashable, Sendable {
    public var name: String
    /// `virtual-mta NAME` lines, in file order (checked to name VMTAs at load).
    public var members: [String]
    public var location: ConfigLocation?

    public init(name: String, members: [String], location: ConfigLocation? = nil) {
        self.name = name
        self.members = members
        self.location = location
    }
}

/// One `<domain PATTERN>` block: which domains it covers and what it sets.
public struct DomainBlock: Hashable, Sendable {
    public enum Pattern: Hashable, Sendable, CustomStringConvertible {
        /// `<domain *>`: every domain.
        case any
        /// `<domain gmail.com>` (lower-cased).
        case name(String)
        /// `<domain $NAME>`: every domain of `domain-macro NAME`.
        case macro(String)
        /// `<domain *.example.com>`: every subdomain of example.com, not
        /// example.com itself; `<domain [*.]example.com>` (`includingParent`):
        /// example.com and every subdomain. The suffix is lower-cased.
        case subdomains(of: String, includingParent: Bool)

        /// Whether the pattern names `domain` (lower-cased), ignoring macros.
        public func matches(_ domain: String) -> Bool {
            switch self {
            case .any: return true
            case .name(let n): return n == domain
            case .macro: return false
            case .subdomains(let parent, let includingParent):
                if domain == parent { return includingParent }
                return domain.hasSuffix("." + parent)
            }
        }

        public var description: String {
            switch self {
            case .any: return "*"
            case .name(let n): return n
            case .macro(let m): return "$" + m
            case .subdomains(let parent, let includingParent): return (includingParent ? "[*.]" : "*.") + parent
            }
        }
    }

    public var pattern: Pattern
    public var overrides: DomainOverrides
    /// `domain-key`, `dkim-sign`, … in this `<domain>`: signing for mail to these recipients.
    public var dkim = DKIMSettings()
    public var location: ConfigLocation?

    public init(pattern: Pattern, overrides: DomainOverrides, location: ConfigLocation? = nil) {
        self.pattern = pattern
        self.overrides = overrides
        self.location = location
    }
}
