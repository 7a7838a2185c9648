import PeregrineConfig

extension SMTPPatternList {
    /// Builds a list from an `<smtp-pattern-list NAME>` block. Lines are
    /// `reply /REGEX/ ACTION…`; regexes are compiled here, once. Throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each line's error and going on; a bad tag throws.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let name = try block.arguments(count: 1...1, usage: "one list name, as in <smtp-pattern-list NAME>")[0]
        var rules: [SMTPPatternRule] = []
        for line in block.directivesOnly(diagnostics: &diagnostics) {
            do { rules.append(try Self.rule(line, in: block)) } catch { diagnostics.record(error) }
        }
        self.init(name: name, rules: rules)
    }

    private static func rule(_ line: ConfigNode, in block: ConfigNode) throws(ConfigError) -> SMTPPatternRule {
            guard line.name == "reply" else {
                throw line.error("unknown directive '\(line.name)' in \(block.displayName) (expected: reply /REGEX/ ACTION…)")
            }
            guard line.arguments.count >= 2 else {
                throw line.error("reply expects /REGEX/ and at least one action, got '\(line.rawArguments)'")
            }
            let regex = try line.parse(line.arguments[0], ConfigValue.regexLiteral)
            var actions: [SMTPPatternAction] = []
            // PowerMTA writes several actions as one comma list: mode=backoff,disable-source-ip=1h.
            for text in line.arguments.dropFirst() {
                for part in text.split(separator: ",") {
                    actions.append(try line.parse(String(part), ConfigValue.patternAction))
                }
            }
            return SMTPPatternRule(pattern: regex, actions: actions, location: line.location)
    }
}

extension ConfigValue {
    /// `mode=backoff`, `mode=normal`, `suspend=DURATION`, `disable-source-ip[=DURATION]`, `bounce`.
    public static func patternAction(_ text: String) throws(ConfigValueError) -> SMTPPatternAction {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let key = parts[0].lowercased()
        let value = parts.count == 2 ? String(parts[1]) : nil
        switch (key, value) {
        case ("mode", "backoff"?): return .backoff
        case ("mode", "normal"?): return .normal
        case ("mode", let v?): throw ConfigValueError("unknown mode '\(v)' (expected mode=backoff or mode=normal)")
        case ("suspend", let v?): return .suspend(try duration(v))
        case ("disable-source-ip", nil): return .disableSourceIP(nil)
        case ("disable-source-ip", let v?): return .disableSourceIP(try duration(v))
        case ("bounce", nil): return .bounce
        default:
            throw ConfigValueError("unknown action '\(text)' (expected mode=backoff, mode=normal, suspend=DURATION, disable-source-ip[=DURATION], bounce)")
        }
    }
}
