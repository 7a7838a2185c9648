import PeregrineConfig

extension DomainOverrides {
    /// The directive names a `<domain>` block accepts.
    public static let directiveNames: [String] = [
        "max-smtp-out", "max-msg-per-connection", "max-msg-rate", "max-connect-rate",
        "max-rcpt-per-transaction", "retry-after", "bounce-after", "route", "use-starttls",
        "require-starttls", "tls-verify-hostname", "smtp-pattern-list", "backoff-max-msg-rate", "backoff-max-smtp-out",
        "backoff-max-connect-rate", "backoff-retry-after", "backoff-to-normal-after",
        "backoff-to-normal-after-delivery", "queue-priority", "connect-timeout",
        "smtp-greeting-timeout", "data-send-timeout", "bounce-upon-no-mx", "smtp-421-means-mx-unavailable",
        "mx-rollup", "bounce-upon-5xx-greeting", "deliver-local-dsn", "allow-priority-interruption",
        "smtp-553-means-invalid-mailbox", "max-cold-virtual-mta-msg", "cluster-max-smtp-out", "cluster-max-msg-rate",
        "smtp-hosts", "queue-to", "notify-of-delay-every",
    ] + timeoutDirectives.map(\.name)

    /// The SMTP client timeouts besides connect-timeout, smtp-greeting-timeout
    /// and data-send-timeout: one per phase of the session.
    static let timeoutDirectives: [(name: String, field: WritableKeyPath<DomainOverrides, Duration?>)] = [
        ("smtp-data-termination-timeout", \.smtpDataTerminationTimeout), ("smtp-ehlo-timeout", \.smtpEHLOTimeout),
        ("smtp-mail-from-timeout", \.smtpMailFromTimeout), ("smtp-rcpt-to-timeout", \.smtpRcptToTimeout),
        ("smtp-data-timeout", \.smtpDataTimeout), ("smtp-rset-timeout", \.smtpRsetTimeout),
        ("smtp-quit-timeout", \.smtpQuitTimeout), ("smtp-starttls-timeout", \.smtpStartTLSTimeout),
    ]

    /// Parses the directives of one `<domain>` block. Nested blocks, unknown
    /// directives and a directive set twice in the block are errors; throws the first.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each directive's error and going on.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) {
        self.init()
        var seen = ConfigDirectiveLines(repeatable: DKIMSettings.repeatableDirectives)
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            if NotApplicableDirectives.handled(node, in: .domain, diagnostics: &diagnostics) { continue }
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do { try apply(node, in: block) } catch { diagnostics.record(error) }
        }
    }

    /// `max-cold-virtual-mta-msg N/d` (or `N/day`, `0`). PowerMTA also takes
    /// a list of daily limits; Peregrine takes one and says so.
    private static func dailyLimit(_ node: ConfigNode) throws(ConfigError) -> Int {
        let text = node.arguments.joined(separator: ",")
        if text.contains(",") {
            throw node.error("\(node.name): a list of daily limits is not supported yet; give one, as in 500/d")
        }
        if text == "0" { return 0 }
        let parts = text.lowercased().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "d" || parts[1] == "day", parts[0].count <= 9, let n = Int(parts[0]), n >= 0 else {
            throw node.error("\(node.name): '\(text)' is not a daily limit (expected N/d, as in 500/d)")
        }
        return n
    }

    /// A timeout: a duration longer than zero (a zero timer would end every session at once).
    private static func timeout(_ node: ConfigNode) throws(ConfigError) -> Duration {
        let d = try node.value(ConfigValue.duration)
        guard d > .zero else { throw node.error("\(node.name) must be longer than zero") }
        return d
    }

    private mutating func apply(_ node: ConfigNode, in block: ConfigNode) throws(ConfigError) {
        if DKIMSettings.directiveNames.contains(node.name) { return } // DomainBlock parses these
        guard Self.directiveNames.contains(node.name) else {
            throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
        }
        guard !node.arguments.isEmpty else { throw node.error("\(node.name) needs a value") }
        switch node.name {
        case "max-smtp-out": maxSMTPOut = try node.integer(in: 1...100_000)
        case "max-msg-per-connection": maxMsgPerConnection = try node.integer(in: 0...100_000_000)
        case "max-msg-rate":
            let rate = try Self.rateOrZero(node)
            maxMsgRate = rate
            maxMsgRateIsZero = rate == nil
        // Cluster-wide caps (CLUSTER.md); refused at validation without cluster-redis.
        case "cluster-max-smtp-out": clusterMaxSMTPOut = try node.integer(in: 1...100_000)
        case "cluster-max-msg-rate": clusterMaxMsgRate = try node.value(ConfigValue.rate)
        case "max-connect-rate": maxConnectRate = try node.value(ConfigValue.rate)
        case "max-rcpt-per-transaction": maxRcptPerTransaction = try node.integer(in: 1...100_000)
        case "retry-after": retryAfter = try node.parse(node.arguments.joined(separator: ","), ConfigValue.retrySchedule)
        case "bounce-after": bounceAfter = try node.value(ConfigValue.duration)
        case "route": route = try node.value(ConfigValue.hostPort)
        case "smtp-hosts": smtpHosts = try Self.smtpHosts(node)
        case "queue-to": queueTo = try Self.queueTo(node)
        case "use-starttls": useStartTLS = try node.value(ConfigValue.bool)
        case "require-starttls": requireStartTLS = try node.value(ConfigValue.bool)
        case "tls-verify-hostname": tlsVerifyHostname = try node.value(ConfigValue.bool)
        case "smtp-pattern-list": smtpPatternList = try node.singleArgument()
        case "backoff-max-msg-rate":
            let rate = try Self.rateOrZero(node)
            backoffMaxMsgRate = rate
            backoffMaxMsgRateIsZero = rate == nil
        case "backoff-max-smtp-out": backoffMaxSMTPOut = try node.integer(in: 1...100_000)
        case "backoff-max-connect-rate": backoffMaxConnectRate = try node.value(ConfigValue.rate)
        case "backoff-retry-after":
            backoffRetryAfter = try node.parse(node.arguments.joined(separator: ","), ConfigValue.retrySchedule)
        case "backoff-to-normal-after": backoffToNormalAfter = .some(try node.value(ConfigValue.durationOrNever))
        case "backoff-to-normal-after-delivery": backoffToNormalAfterDelivery = try node.value(ConfigValue.bool)
        case "queue-priority": queuePriority = try node.integer(in: 0...100)
        case "max-cold-virtual-mta-msg": maxColdVirtualMTAMsg = try Self.dailyLimit(node)
        case "allow-priority-interruption": allowPriorityInterruption = try node.value(ConfigValue.bool)
        case "smtp-553-means-invalid-mailbox": smtp553MeansInvalidMailbox = try node.value(ConfigValue.bool)
        case "connect-timeout": connectTimeout = try Self.timeout(node)
        case "smtp-greeting-timeout": smtpGreetingTimeout = try Self.timeout(node)
        case "data-send-timeout": dataSendTimeout = try Self.timeout(node)
        case "bounce-upon-no-mx": bounceUponNoMX = try node.value(ConfigValue.bool)
        case "smtp-421-means-mx-unavailable": smtp421MeansMXUnavailable = try node.value(ConfigValue.bool)
        case "mx-rollup": mxRollup = try node.value(ConfigValue.bool)
        case "bounce-upon-5xx-greeting": bounceUpon5xxGreeting = try node.value(ConfigValue.bool)
        case "deliver-local-dsn": deliverLocalDSN = try node.value(ConfigValue.bool)
        case "notify-of-delay-every": notifyOfDelayEvery = .some(try node.value(ConfigValue.durationOrNever))
        default:
            guard let timeout = Self.timeoutDirectives.first(where: { $0.name == node.name }) else {
                throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
            }
            self[keyPath: timeout.field] = try Self.timeout(node)
        }
    }
}
