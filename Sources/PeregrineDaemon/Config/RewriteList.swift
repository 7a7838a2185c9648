import PeregrineConfig

/// PowerMTA's `<rewrite-list NAME>`: address rewriting at injection, for the
/// `<source>` blocks that name it (`rewrite-list NAME`). Before the message
/// is spooled and before DKIM signs it:
///
/// ```
/// <rewrite-list brand>
///     mail-from *@old.example *@new.example      # envelope sender, local part kept
///     header-from *@old.example *@new.example    # the address in From:
///     rcpt-to user@typo.example user@example.com # an envelope recipient
/// </rewrite-list>
/// ```
///
/// A pattern is `local@domain`, either side `*` (any); a replacement is
/// `local@domain` where a `*` side keeps that side of the matched address.
/// Per field, the first matching line applies, once (no chains).
public struct RewriteList: Hashable, Sendable {
    public enum Field: String, Hashable, Sendable, CaseIterable {
        case mailFrom = "mail-from"
        case headerFrom = "header-from"
        case rcptTo = "rcpt-to"
    }

    public struct Rule: Hashable, Sendable {
        public var field: Field
        /// nil: any local part / any domain.
        public var local: String?
        public var domain: String?
        /// nil: keep the matched address's local part / domain.
        public var newLocal: String?
        public var newDomain: String?
        public var location: ConfigLocation

        /// The rewritten address, or nil when this rule does not match.
        func apply(_ address: String) -> String? {
            guard let at = address.lastIndex(of: "@") else { return nil }
            let l = address[..<at], d = address[address.index(after: at)...]
            // Local parts compare exactly except for case (RFC 5321 leaves them to the receiver; senders vary case), domains by case.
            if let local, l.lowercased() != local { return nil }
            if let domain, d.lowercased() != domain { return nil }
            return "\(newLocal ?? String(l))@\(newDomain ?? String(d))"
        }
    }

    public var name: String
    public var rules: [Rule]

    /// `address` after the first `field` rule that matches it (unchanged when none does).
    public func rewrite(_ address: String, _ field: Field) -> String {
        for rule in rules where rule.field == field {
            if let out = rule.apply(address) { return out }
        }
        return address
    }

    public func has(_ field: Field) -> Bool { rules.contains { $0.field == field } }
}

extension RewriteList {
    /// Parses `<rewrite-list NAME>`, recording each line's error.
    init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let name = try block.arguments(count: 1...1, usage: "one list name, as in <rewrite-list brand>")[0].lowercased()
        var rules: [Rule] = []
        for line in block.directivesOnly(diagnostics: &diagnostics) {
            do { rules.append(try Self.rule(line, in: block)) } catch { diagnostics.record(error) }
        }
        self.init(name: name, rules: rules)
    }

    private static func rule(_ node: ConfigNode, in block: ConfigNode) throws(ConfigError) -> Rule {
        guard let field = Field(rawValue: node.name) else {
            throw node.error("unknown directive '\(node.name)' in \(block.displayName) (mail-from, header-from or rcpt-to)")
        }
        let args = try node.arguments(count: 2...2, usage: "\(node.name) PATTERN REPLACEMENT, as in \(node.name) *@old.example *@new.example")
        let (local, domain) = try parts(node, args[0], what: "pattern")
        let (newLocal, newDomain) = try parts(node, args[1], what: "replacement")
        return Rule(field: field, local: local, domain: domain, newLocal: newLocal, newDomain: newDomain, location: node.location)
    }

    /// `local@domain` with `*` for either side (nil), lower-cased for a pattern.
    private static func parts(_ node: ConfigNode, _ text: String, what: String) throws(ConfigError) -> (String?, String?) {
        guard let at = text.lastIndex(of: "@"), at != text.startIndex, text.index(after: at) < text.endIndex else {
            throw node.error("\(node.name): \(what) '\(text)' is not LOCAL@DOMAIN (either side may be *)")
        }
        let l = String(text[..<at]), d = String(text[text.index(after: at)...])
        // An address's bytes go into MAIL FROM and headers: no controls, spaces, brackets or a second '@'.
        let bad: (Character) -> Bool = { $0.isWhitespace || $0 == "<" || $0 == ">" || $0 == "@" || $0 == "," || $0 == "\"" || ($0.asciiValue.map { $0 < 0x21 || $0 == 0x7f } ?? false) }
        guard !l.contains(where: bad), !d.contains(where: bad) else {
            throw node.error("\(node.name): \(what) '\(text)' is not a plain address")
        }
        if (l.contains("*") && l != "*") || (d.contains("*") && d != "*") {
            throw node.error("\(node.name): \(what) '\(text)': '*' stands for a whole local part or domain, not part of one")
        }
        let isPattern = what == "pattern"
        return (l == "*" ? nil : (isPattern ? l.lowercased() : l), d == "*" ? nil : d.lowercased())
    }
}
