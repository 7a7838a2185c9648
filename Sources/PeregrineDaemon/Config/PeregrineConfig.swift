import PeregrineIO
import PeregrineConfig
import PeregrineAccounting
import PeregrineEngine

/// The daemon's configuration (PowerMTA names, see DOMAIN.md), as plain values.
///
/// Build it with `PeregrineConfig.load(path:)` or `parse(_:file:)`; every
/// mistake is a `ConfigError` with `file:line`. Per-queue settings come from
/// `settings(forDomain:vmta:)`, injection rights from `source(for:)`.
public struct PeregrineConfig: Hashable, Sendable {
    /// `smtp-listener ADDR:PORT` (repeatable); `0/0:25` is every IPv4 address.
    public var smtpListeners: [SocketAddress] = []
    /// `dummy-smtp-port [ADDR:]PORT`: a listener that accepts and discards
    /// every message (127.0.0.1 unless an address is given).
    public var dummySMTPListener: SocketAddress?
    /// `smtp-listener ADDR:PORT tls=yes`: listeners (also in `smtpListeners`) that
    /// start TLS before the greeting (port 465 style, RFC 8314).
    public var implicitTLSListeners: [SocketAddress] = []
    /// `smtp-server-tls-certificate` / `smtp-server-tls-key`: STARTTLS on injection; nil: no TLS.
    public var serverTLS: ServerTLSSettings?
    /// `http-mgmt-port PORT` or `ADDR:PORT`; a bare port listens on 127.0.0.1. nil: no management port.
    public var httpManagement: SocketAddress?
    /// `http-access CIDR admin|monitor|none` (repeatable; the longest prefix applies).
    public var httpAccess: [HTTPAccessRule] = []
    /// `spool PATH`.
    public var spoolPath = "/var/spool/peregrine"
    /// `http-mgmt-token-file PATH`: the bearer token mutating management calls
    /// need (created by the daemon, mode 0600, if absent); nil: `<spool>/mgmt-token`.
    public var httpManagementTokenFile: String?
    /// The token file in force.
    public var managementTokenPath: String { httpManagementTokenFile ?? spoolPath + "/mgmt-token" }
    /// `max-smtp-in N`: inbound SMTP connections open at once, over every
    /// listener and loop; one more is answered 421 4.7.0 and closed.
    public var maxSMTPIn = 1000
    /// `max-queued-in-memory`: pending recipients whose messages the
    /// scheduler holds in memory; nil = no limit (every queued message).
    public var maxQueuedInMemory: Int?
    /// `total-max-smtp-out`: outbound connections of every queue together;
    /// nil = no cap beyond each queue's max-smtp-out.
    public var totalMaxSMTPOut: Int?
    /// `max-smtp-in-errors N`: protocol errors per inbound session before 421 4.7.0 and close.
    public var maxSMTPInErrors = 10
    /// `smtp-idle-timeout DURATION`: how long an injecting client may stay
    /// silent, or leave its replies unread, before 421 4.4.2 / close (RFC 5321: at least 5m).
    public var smtpIdleTimeout: Duration = .seconds(300)
    /// `smtp-session-timeout DURATION`: the longest an inbound session may
    /// last in all (a client trickling bytes to dodge the idle timeout); `never`: no limit.
    public var smtpSessionTimeout: Duration? = .seconds(3600)
    /// `io-backend io_uring|epoll|dispatch`; nil: the command line or the daemon's default decides.
    public var ioBackend: BackendKind?
    /// `threads N`: event loops; nil: the command line or one per core.
    public var threads: Int?
    /// `dns-server ADDR[:PORT]` (repeatable, port 53 by default); empty: the system resolvers.
    public var dnsServers: [SocketAddress] = []
    /// `domain-macro NAME a.com,b.com`, lower-cased.
    public var domainMacros: [String: [String]] = [:]
    /// `host-name NAME`: the default EHLO name and the Received header's name.
    public var hostName: String?
    /// `postmaster ADDR`.
    public var postmaster: String?
    /// `dsn-max-rate-per-sender RATE`: bounce reports one envelope sender gets
    /// at most (a burst of up to 20, then this rate). PowerMTA has no name for
    /// it; a list bounced wholesale must not flood its sender.
    public var dsnMaxRatePerSender: Rate = .limited(count: 100, per: .seconds(3600))
    /// `<bounce-processor>`: addresses whose mail is read as bounce reports (`rb` records).
    public var bounceProcessor: InboundProcessorSettings?
    /// `<feedback-loop-processor>`: addresses whose mail is read as ARF complaints (`f` records).
    public var feedbackLoopProcessor: InboundProcessorSettings?
    /// `<source CIDR>` and `<source {NAME}>` blocks in file order.
    public var sources: [SourceSettings] = []
    /// `<smtp-user>` blocks and the AUTH brute-force policy.
    public var auth = SMTPAuthSettings()
    /// `http-injection-listener`, `<api-key>` and their settings (HTTPInjectionSettings.swift).
    public var httpInjection = HTTPInjectionSettings()
    /// `relay-domain NAME` (repeatable, lower-cased): mail to these domains is
    /// accepted from any client with SMTP service, relay rights or not.
    public var relayDomains: [String] = []
    /// `<virtual-mta NAME>` blocks in file order.
    public var virtualMTAs: [VirtualMTASettings] = []
    /// `<virtual-mta-pool NAME>` blocks in file order.
    public var virtualMTAPools: [VirtualMTAPool] = []
    /// Top-level `<domain>` blocks in file order.
    public var domains: [DomainBlock] = []
    /// `<pattern-list NAME>` by name (lower-cased): virtual-mta choice at injection.
    public var vmtaPatternLists: [String: VMTAPatternList] = [:]
    /// `<rewrite-list NAME>` blocks by lower-cased name (RewriteList.swift).
    public var rewriteLists: [String: RewriteList] = [:]
    /// `<smtp-pattern-list NAME>` by name.
    public var patternLists: [String: SMTPPatternList] = [:]
    /// `<acct-file PATH>` blocks.
    public var accountingFiles: [AccountingFileOptions] = []
    /// `<webhook NAME>` blocks (Webhooks/: durable event delivery over HTTP).
    public var webhooks: [WebhookSettings] = []
    /// `webhook-max-age`: an event not acknowledged by then is written to
    /// accounting as undeliverable (`w`) and skipped.
    public var webhookMaxAge: Duration = .seconds(3 * 86_400)
    /// The built-in classifier plus `<bounce-category-patterns>`.
    public var bounceClassifier = BounceClassifier()
    /// The `domain-key` files, loaded at load (so again on reload).
    public var dkimKeys = DKIMKeyRing()
    /// Some scope has a DKIM directive: injection takes the signing path.
    public var dkimConfigured = false
    /// `shutdown-timeout`: how long SIGTERM waits for deliveries in flight
    /// before it closes them (their messages stay spooled for the next start).
    public var shutdownTimeout: Duration = .seconds(30)
    /// `log-file`, `log-rotate`, `run-as-user`, `run-as-group`, `run-as-root`.
    public var runtime = RuntimeSettings()
    /// `cluster-redis`, `cluster-node-name`, `cluster-node-count` (CLUSTER.md).
    public var cluster = ClusterSettings()

    /// The listeners `peregrine run` binds: `smtp-listener`s, else every IPv4 address on port 25.
    public var effectiveSMTPListeners: [SocketAddress] {
        if !smtpListeners.isEmpty { return smtpListeners }
        return (try? SocketAddress(ip: "0.0.0.0", port: 25)).map { [$0] } ?? []
    }

    /// Warnings found at load with their `file:line` (directives accepted as
    /// not applicable, …), in file order.
    public var locatedWarnings: [ConfigError] = []

    /// What the operator should know about a config that loads: the located
    /// warnings, then settings whose default matters (no smtp-listener binds
    /// every address). Logged at start.
    public var warnings: [String] { locatedWarnings.map(\.description) + defaultWarnings }

    /// The warnings about defaults, which have no line to point at.
    public var defaultWarnings: [String] {
        var out: [String] = []
        if smtpListeners.isEmpty {
            out.append("no smtp-listener: the daemon will listen on 0.0.0.0:25 (every IPv4 address); "
                       + "add e.g. 'smtp-listener 127.0.0.1:25' to choose")
        }
        return out
    }

    public init() {}

    public func virtualMTA(named name: String) -> VirtualMTASettings? {
        let key = name.lowercased()
        return virtualMTAs.first { $0.name == key }
    }

    public func pool(named name: String) -> VirtualMTAPool? {
        let key = name.lowercased()
        return virtualMTAPools.first { $0.name == key }
    }

    /// The VMTAs a name stands for: itself if it is a VMTA, the members if a pool, else empty.
    public func virtualMTANames(for name: String) -> [String] {
        if let vmta = virtualMTA(named: name) { return [vmta.name] }
        return pool(named: name)?.members ?? []
    }

    /// The pattern list of a queue's settings, if it names one.
    public func patternList(for settings: DomainSettings) -> SMTPPatternList? {
        settings.smtpPatternList.flatMap { patternLists[$0.lowercased()] }
    }
}

/// `http-access CIDR LEVEL`.
public struct HTTPAccessRule: Hashable, Sendable {
    public enum Level: String, Hashable, Sendable, CaseIterable {
        /// Read and act (pause, delete, reload).
        case admin
        /// Read only.
        case monitor
        /// Explicitly refused.
        case none
    }

    public var network: IPNetwork
    public var level: Level

    public init(network: IPNetwork, level: Level) {
        self.network = network
        self.level = level
    }
}
