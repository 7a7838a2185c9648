/// What a matching reply does to its queue (PowerMTA's `smtp-pattern-list` actions).
public enum SMTPPatternAction: Hashable, Sendable, CustomStringConvertible {
    /// `mode=backoff`: switch the queue to its backoff-* settings.
    case backoff
    /// `mode=normal`: leave backoff mode.
    case normal
    /// `suspend=DURATION`: no delivery attempts on the queue for that long.
    case suspend(Duration)
    /// `disable-source-ip[=DURATION]`: stop using this source IP for the domain
    /// (nil: the daemon's default period).
    case disableSourceIP(Duration?)
    /// `bounce`: fail the recipient permanently even on a 4xx.
    case bounce

    public var description: String {
        switch self {
        case .backoff: return "mode=backoff"
        case .normal: return "mode=normal"
        case .suspend(let d): return "suspend=\(d.configText)"
        case .disableSourceIP(let d): return d.map { "disable-source-ip=\($0.configText)" } ?? "disable-source-ip"
        case .bounce: return "bounce"
        }
    }
}

/// One `reply /REGEX/ ACTION…` line.
public struct SMTPPatternRule: Hashable, Sendable {
    public var pattern: CompiledRegex
    public var actions: [SMTPPatternAction]
    public var location: ConfigLocation?

    public init(pattern: CompiledRegex, actions: [SMTPPatternAction], location: ConfigLocation? = nil) {
        self.pattern = pattern
        self.actions = actions
        self.location = location
    }
}

/// `<smtp-pattern-list NAME>`: regexes over the full reply text
/// (`ReplyText.full`, "CODE ENHANCED TEXT") selecting queue actions. Rules are
/// tried in file order and the first match wins, so specific lines go first.
/// Matching costs one regex scan per rule per remote reply.
public struct SMTPPatternList: Hashable, Sendable {
    public var name: String
    public var rules: [SMTPPatternRule]

    public init(name: String, rules: [SMTPPatternRule] = []) {
        self.name = name
        self.rules = rules
    }

    /// The first rule matching `fullReply`, if any.
    public func firstMatch(_ fullReply: String) -> SMTPPatternRule? {
        rules.first { $0.pattern.matches(fullReply) }
    }

    /// The actions for a reply; empty when no rule matches.
    public func actions(for reply: ReplyText) -> [SMTPPatternAction] {
        firstMatch(reply.full)?.actions ?? []
    }
}
