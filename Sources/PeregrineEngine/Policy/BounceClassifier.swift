/// One `/REGEX/ category` line of `<bounce-category-patterns>`; matched against `ReplyText.full`.
public struct BounceCategoryRule: Hashable, Sendable {
    public var pattern: CompiledRegex
    public var category: BounceCategory

    public init(pattern: CompiledRegex, category: BounceCategory) {
        self.pattern = pattern
        self.category = category
    }
}

/// Maps a remote reply to a PowerMTA bounce category.
///
/// Order of evaluation, first hit wins:
/// 1. the operator's `<bounce-category-patterns>` rules (over "CODE ENHANCED TEXT");
/// 2. unambiguous phrases in the text (spam/blocklist words, quota, unknown user, DMARC, …),
///    because the text is often more precise than the code (Orange sends
///    `552 5.1.1 … Recipient overquota`);
/// 3. the enhanced status code (RFC 3463: 5.1.1 bad-mailbox, 5.2.2 quota-issues, 5.7.x policy-related, …);
/// 4. weaker words (`rejected`, `denied`, `try again later`, `syntax error`, …);
/// 5. `other`.
public struct BounceClassifier: Hashable, Sendable {
    public var customRules: [BounceCategoryRule]

    public init(customRules: [BounceCategoryRule] = []) {
        self.customRules = customRules
    }

    public func classify(_ reply: ReplyText) -> BounceCategory {
        if !customRules.isEmpty {
            let full = reply.full
            if let rule = customRules.first(where: { $0.pattern.matches(full) }) { return rule.category }
        }
        let table = BounceClassifier.builtIn
        if let hit = table.strongText.first(where: { $0.pattern.matches(reply.text) }) { return hit.category }
        if let enhanced = reply.enhancedCode, let category = BounceClassifier.category(forEnhancedCode: enhanced) {
            return category
        }
        if let hit = table.weakText.first(where: { $0.pattern.matches(reply.text) }) { return hit.category }
        return .other
    }

    /// RFC 3463 subject/detail → category; nil for success codes and unknown shapes.
    public static func category(forEnhancedCode code: String) -> BounceCategory? {
        let parts = code.split(separator: ".").map { Int($0) }
        guard parts.count == 3, let cls = parts[0], let subject = parts[1], let detail = parts[2], cls == 4 || cls == 5 else {
            return nil
        }
        switch (subject, detail) {
        case (1, 1), (1, 3), (1, 6): return .badMailbox
        case (1, 2), (1, 10): return .badDomain
        case (1, 7), (1, 8): return .invalidSender
        case (1, _): return .other
        case (2, 0): return .badMailbox
        case (2, 1): return .inactiveMailbox
        case (2, 2): return .quotaIssues
        case (2, 3): return .contentRelated
        case (2, _): return .other
        case (3, 4): return .contentRelated
        case (3, _): return .badConfiguration
        case (4, 1): return .noAnswerFromHost
        case (4, 3), (4, 4), (4, 6): return .routingErrors
        case (4, 7): return .messageExpired
        case (4, _): return .badConnection
        case (5, 3): return .policyRelated
        case (5, _): return .protocolErrors
        case (6, _): return .contentRelated
        case (7, 7): return .contentRelated
        case (7, _): return .policyRelated
        default: return .other
        }
    }

    /// The built-in phrase tables, compiled once per process.
    struct BuiltInTables {
        var strongText: [BounceCategoryRule]
        var weakText: [BounceCategoryRule]
    }

    static let builtIn: BuiltInTables = {
        func rules(_ list: [(String, BounceCategory)]) -> [BounceCategoryRule] {
            // Patterns are literals in this file and covered by tests; an invalid one is skipped, not a crash.
            list.compactMap { pattern, category in
                (try? CompiledRegex(pattern, caseInsensitive: true)).map { BounceCategoryRule(pattern: $0, category: category) }
            }
        }
        let who = #"(user|mailbox|recipient|rcpt|local part|address|account|mail drop|addressee)"#
        let strong: [(String, BounceCategory)] = [
            (#"\bspam|spamhaus|spamcop|junk mail|unsolicited|black ?list|block ?list|blocked|\b(dns)?rbl\b|realtime blackhole|reputation|\bu\.?c\.?e\.?\b"#, .spamRelated),
            (#"\bvirus|malware|infected"#, .virusRelated),
            (#"quota|mailbox (is )?full|inbox (is )?full|out of storage|storage space|insufficient storage|receiving (e-?mail|mail|messages) at a rate|pleine"#, .quotaIssues),
            (who + #" (\S+ )?(has been |is )?(currently |temporarily )?(disabled|deactivated|inactive|expired|suspended|not activated)|inactive (user|mailbox|account)"#, .inactiveMailbox),
            (#"domain (\S+ )?(does not exist|doesn.?t exist|not found|retired|invalid|unknown|is obsolete|no longer in use)|host (or domain name )?not found|no mx record"#, .badDomain),
            (#"(no such|bad|invalid|unknown|illegal|unavailable|non-?existent) (local )?"# + who, .badMailbox),
            (who + #"( <?\S+@\S+>?)?:? (is )?(not (a )?valid|not known|not here|not found|does not exist|doesn.?t exist|unknown|invalid|unavailable|unallocated)"#, .badMailbox),
            (#"does not exist|no mailbox here|not our customer|no longer (valid|available)|doesn.?t have an? \S+ account"#, .badMailbox),
            (#"sender (address )?(rejected|invalid|unknown)|invalid sender|bad sender"#, .invalidSender),
            (#"\brelay(ing)?\b"#, .relayingIssues),
            (#"message (has )?expired|too old|delivery time expired"#, .messageExpired),
            (#"message content|content rejected|content polic"#, .contentRelated),
            (#"dmarc|\bspf\b|dkim|greylist|graylist|rate.limit|throttl|too many (connections|sessions|messages|recipients)|(excessive|unexpected) volume|max(imum)? (number of )?(messages?|connections?)|trop de connexions"#, .policyRelated),
        ]
        let weak: [(String, BounceCategory)] = [
            (#"denied|prohibit|refused|rejected|reject due|not allowed|banned|policy|not accepted|deferred|try again later"#, .policyRelated),
            (#"bad sequence|syntax error|command not (recognized|implemented)|unrecognized command|line too long"#, .protocolErrors),
            (#"\broute\b|unroutable|unrouteable|no route"#, .routingErrors),
            (#"connection (timed out|reset|refused|lost|dropped)|service not available|closing (transmission )?channel|server busy"#, .badConnection),
            (#"no answer|timed out|timeout"#, .noAnswerFromHost),
        ]
        return BuiltInTables(strongText: rules(strong), weakText: rules(weak))
    }()
}
