import PeregrineConfig

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

    /// True when the regex source names a 2xx code: a `2` that does not
    /// continue a number (no digit or `.` before it, so `421`, `4\.7\.28`,
    /// `5.2.2` do not count) and either opens a bracket class (`[2-5]`) or is
    /// followed by what continues a code (a digit, `.`, `\`, `[`): `250`,
    /// `2\d\d`, `2[0-9][0-9]`, `2..`, `^2\.0\.0`. A textual, conservative test:
    /// a false positive only costs running the list on 2xx replies.
    public var namesPositiveCode: Bool {
        let s = Array(pattern.source.utf8)
        for (i, c) in s.enumerated() where c == UInt8(ascii: "2") {
            let before: UInt8? = i > 0 ? s[i - 1] : nil
            if let b = before, (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: ".") { continue }
            if before == UInt8(ascii: "[") { return true }
            guard i + 1 < s.count else { continue }
            let next = s[i + 1]
            if (next >= UInt8(ascii: "0") && next <= UInt8(ascii: "9")) || next == UInt8(ascii: ".")
                || next == UInt8(ascii: "\\") || next == UInt8(ascii: "[") { return true }
        }
        return false
    }
}

/// `<smtp-pattern-list NAME>`: regexes over the full reply text
/// (`ReplyText.full`, "CODE ENHANCED TEXT") selecting queue actions. Rules are
/// tried in file order and the first match wins, so specific lines go first.
/// Matching costs one regex scan (~4 µs) per rule per remote reply.
///
/// Positive (2xx) replies, the bulk of all replies, are matched only when the
/// list has a rule about them (`seesPositiveReplies`): a rule with the action
/// `mode=normal`, or whose regex names a 2xx code (`SMTPPatternRule.namesPositiveCode`).
/// Then the whole list runs, in order, as for any other reply; otherwise a 2xx
/// reply matches nothing without running a regex.
public struct SMTPPatternList: Hashable, Sendable {
    public var name: String
    public var rules: [SMTPPatternRule] {
        didSet { seesPositiveReplies = Self.seesPositiveReplies(rules) }
    }
    /// Whether 2xx replies are matched against the list (decided when the rules are set).
    public private(set) var seesPositiveReplies: Bool

    public init(name: String, rules: [SMTPPatternRule] = []) {
        self.name = name
        self.rules = rules
        self.seesPositiveReplies = Self.seesPositiveReplies(rules)
    }

    static func seesPositiveReplies(_ rules: [SMTPPatternRule]) -> Bool {
        rules.contains { $0.actions.contains(.normal) || $0.namesPositiveCode }
    }

    /// Whether a reply with this basic code is matched at all.
    public func applies(toCode code: Int) -> Bool {
        seesPositiveReplies || !(200...299).contains(code)
    }

    /// The first rule matching `fullReply`, if any.
    public func firstMatch(_ fullReply: String) -> SMTPPatternRule? {
        rules.first { $0.pattern.matches(fullReply) }
    }

    /// The actions for a reply; empty when no rule matches.
    public func actions(for reply: ReplyText) -> [SMTPPatternAction] {
        guard applies(toCode: reply.code) else { return [] }
        return firstMatch(reply.full)?.actions ?? []
    }
}
