import PeregrineConfig
import PeregrineIO

/// What a `<source CIDR>` block grants to injecting clients from that network.
/// The most specific (longest-prefix) matching block applies; a client that
/// matches none gets `SourceSettings()` (no relaying). A named block,
/// `<source {NAME}>`, matches no address: `<smtp-user>`'s `source {NAME}`
/// gives its rights to a client that logged in as that user.
public struct SourceSettings: Hashable, Sendable {
    public var network: IPNetwork?
    /// `<source {NAME}>`: the name, lower-cased (then `network` is nil).
    public var name: String?
    /// `always-allow-relaying`: accept mail for any domain from these clients.
    public var alwaysAllowRelaying = false
    /// `smtp-service`: whether these clients may talk SMTP at all.
    public var smtpService = true
    /// `process-x-virtual-mta`: honour and remove an `X-Virtual-MTA:` header.
    public var processXVirtualMTA = false
    /// `process-x-job`: take the job id from `X-Job:`.
    public var processXJob = false
    /// `default-virtual-mta`: a VMTA or pool name (checked to exist at load).
    public var defaultVirtualMTA: String?
    /// `max-message-size` in bytes; 0 = unlimited.
    public var maxMessageSize = 0
    /// `require-auth`: MAIL gets 530 5.7.0 until the client logged in (AUTH).
    public var requireAuth = false
    /// `allow-unencrypted-plain-auth`: offer AUTH before STARTTLS (passwords in clear text).
    public var allowUnencryptedPlainAuth = false
    /// `max-msg-rate N/INTERVAL`: transactions (MAIL) this source may start,
    /// per login when logged in, else for the whole block; more get 451 4.7.1.
    public var maxMsgRate: Rate = .unlimited
    /// `add-received-header`.
    public var addReceivedHeader = true
    /// `add-message-id-header`: add `Message-ID: <…@host-name>` to a message
    /// that has none (Gmail refuses mail without one), before DKIM signs it.
    public var addMessageIDHeader = false
    /// `add-date-header`: add `Date:` (the time of injection) when missing.
    public var addDateHeader = false
    /// `remove-received-headers`: drop the injector's Received headers (the
    /// internal hops of an application); Peregrine's own is added after.
    public var removeReceivedHeaders = false
    /// `retain-x-virtual-mta`: keep the `X-Virtual-MTA:` header that
    /// process-x-virtual-mta reads (removed by default).
    public var retainXVirtualMTA = false
    /// `max-smtp-in N`: connections one client address of this source may
    /// have open at once (the top-level `max-smtp-in` caps the total); one
    /// more is answered 421 4.7.0 and closed.
    public var maxSMTPIn = SourceSettings.defaultMaxSMTPIn
    /// `jobid-header NAME`: the header the job id is read from (PowerMTA's;
    /// implies processing it). nil: `X-Job` when `process-x-job` is on.
    public var jobIDHeader: String?
    /// `retain-x-job`: keep the job id header in the message (the default,
    /// as Peregrine always has); `no` removes it once read.
    public var retainXJob = true
    /// `remove-header NAME[,NAME…]`: headers removed from injected messages.
    public var removeHeaders: [String] = []
    /// `process-x-envid`: an `X-Envid:` header gives the DSN envelope id when
    /// MAIL FROM had no ENVID=, and is removed.
    public var processXEnvID = false
    /// `max-errors-per-connection N`: protocol errors before 421 4.7.0 and
    /// close, for these clients; nil: the top-level max-smtp-in-errors.
    public var maxErrorsPerConnection: Int?
    /// `max-rcpt-per-message N`: RCPTs accepted per message; more get 452 4.5.3. nil: the session's default.
    public var maxRcptPerMessage: Int?
    /// `allow-starttls`: offer STARTTLS to these clients (when a certificate is set).
    public var allowStartTLS = true
    /// `verp-default`: messages from these clients are VERPed (one recipient
    /// per transaction, the recipient in the return path) as if MAIL FROM had XVERP.
    public var verpDefault = false
    /// `pattern-list NAME`: the `<pattern-list>` choosing these clients' virtual-mta.
    public var patternList: String?
    /// `rewrite-list NAME`: the `<rewrite-list>` applied to these clients' mail at injection.
    public var rewriteList: String?
    /// The header the job id comes from, if any.
    public var jobHeaderName: String? { jobIDHeader ?? (processXJob ? "X-Job" : nil) }
    public static let defaultMaxSMTPIn = 100
    /// `domain-key`, `dkim-sign`, …: signing for mail these clients inject.
    public var dkim = DKIMSettings()
    /// `log-connections`: a log-file line when a client of this source connects and disconnects.
    public var logConnections = false
    /// `log-commands`: a log-file line per SMTP command and reply (AUTH arguments are never logged).
    public var logCommands = false
    /// `log-data`: the message bytes too. For debugging one client only: it
    /// writes every message into the log.
    public var logData = false
    public var location: ConfigLocation?

    public init(network: IPNetwork? = nil) {
        self.network = network
    }
}

extension SourceSettings {
    /// Parses a `<source CIDR>` block; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// Parses a `<source CIDR>` block, recording each directive's error; a bad
    /// network in the tag throws (the block cannot be placed).
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let cidr = try block.arguments(count: 1...1, usage: "one network, as in <source 127.0.0.0/8>, or a name, as in <source {auth}>")[0]
        if let named = Self.braceName(cidr) {
            self.init()
            name = named
        } else {
            self.init(network: try block.parse(cidr, ConfigValue.network))
        }
        location = block.location
        var seen = ConfigDirectiveLines(repeatable: DKIMSettings.repeatableDirectives)
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            if NotApplicableDirectives.handled(node, in: .source, diagnostics: &diagnostics) { continue }
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do { try apply(node, in: block) } catch { diagnostics.record(error) }
        }
    }

    /// A header field name (RFC 5322 ftext: printable ASCII but ':').
    private static func headerName(_ node: ConfigNode, _ text: String) throws(ConfigError) -> String {
        let name = text
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 && $0 != ":" }) else {
            throw node.error("\(node.name): '\(text)' is not a header name")
        }
        return name
    }

    private mutating func apply(_ node: ConfigNode, in block: ConfigNode) throws(ConfigError) {
            switch node.name {
            case "always-allow-relaying": alwaysAllowRelaying = try node.value(ConfigValue.bool)
            case "smtp-service": smtpService = try node.value(ConfigValue.bool)
            case "process-x-virtual-mta": processXVirtualMTA = try node.value(ConfigValue.bool)
            case "process-x-job": processXJob = try node.value(ConfigValue.bool)
            case "default-virtual-mta": defaultVirtualMTA = try node.singleArgument()
            case "max-message-size":
                maxMessageSize = try node.value { (text: String) throws(ConfigValueError) -> Int in
                    text.lowercased() == "unlimited" ? 0 : try ConfigValue.size(text)
                }
            case "require-auth":
                // Enforced by the SMTP session (530 5.7.0 before MAIL); see InjectionHandler.
                requireAuth = try node.value(ConfigValue.bool)
            case "allow-unencrypted-plain-auth": allowUnencryptedPlainAuth = try node.value(ConfigValue.bool)
            case "max-msg-rate": maxMsgRate = try node.value(ConfigValue.rate)
            case "add-received-header": addReceivedHeader = try node.value(ConfigValue.bool)
            case "add-message-id-header": addMessageIDHeader = try node.value(ConfigValue.bool)
            case "add-date-header": addDateHeader = try node.value(ConfigValue.bool)
            case "remove-received-headers": removeReceivedHeaders = try node.value(ConfigValue.bool)
            case "retain-x-virtual-mta": retainXVirtualMTA = try node.value(ConfigValue.bool)
            case "max-smtp-in": maxSMTPIn = try node.integer(in: 1...1_000_000)
            case "jobid-header": jobIDHeader = try Self.headerName(node, node.singleArgument())
            case "retain-x-job": retainXJob = try node.value(ConfigValue.bool)
            case "remove-header":
                for name in node.arguments.joined(separator: ",").split(separator: ",") {
                    removeHeaders.append(try Self.headerName(node, String(name)))
                }
            case "process-x-envid": processXEnvID = try node.value(ConfigValue.bool)
            case "pattern-list": patternList = try node.singleArgument().lowercased()
            case "allow-starttls": allowStartTLS = try node.value(ConfigValue.bool)
            case "max-errors-per-connection": maxErrorsPerConnection = try node.integer(in: 1...10_000)
            case "max-rcpt-per-message": maxRcptPerMessage = try node.integer(in: 1...100_000)
            case "log-connections": logConnections = try node.value(ConfigValue.bool)
            case "log-commands": logCommands = try node.value(ConfigValue.bool)
            case "log-data": logData = try node.value(ConfigValue.bool)
            case "verp-default": verpDefault = try node.value(ConfigValue.bool)
            case "rewrite-list": rewriteList = try node.singleArgument().lowercased()
            default:
                if try dkim.apply(node) { return }
                throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
            }
    }
}

extension SourceSettings {
    /// `{name}` → `name` lower-cased; nil when `text` is not a braced name.
    static func braceName(_ text: String) -> String? {
        guard text.count > 2, text.hasPrefix("{"), text.hasSuffix("}") else { return nil }
        let inner = text.dropFirst().dropLast().lowercased()
        guard BlockConfig.isValidName(inner) else { return nil }
        return inner
    }
}
