import PeregrineConfig

extension BounceClassifier {
    /// Builds a classifier whose custom rules come from a
    /// `<bounce-category-patterns>` block of `/REGEX/ category` lines (the
    /// regex is the node's name, see `BlockConfig`); built-in rules still apply after them.
    /// Throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each line's error and going on.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        guard block.arguments.isEmpty else {
            throw block.error("<bounce-category-patterns> takes no arguments")
        }
        var rules: [BounceCategoryRule] = []
        for line in block.directivesOnly(diagnostics: &diagnostics) {
            do { rules.append(try Self.rule(line)) } catch { diagnostics.record(error) }
        }
        self.init(customRules: rules)
    }

    private static func rule(_ line: ConfigNode) throws(ConfigError) -> BounceCategoryRule {
            guard line.name.hasPrefix("/") else {
                throw line.error("expected '/REGEX/ category' in <bounce-category-patterns>, got '\(line.name)'")
            }
            let regex = try line.parse(line.name, ConfigValue.regexLiteral)
            guard line.arguments.count == 1 else {
                throw line.error("expected one category after \(line.name), got '\(line.rawArguments)'")
            }
            guard let category = BounceCategory(rawValue: line.arguments[0].lowercased()) else {
                let names = BounceCategory.allCases.map(\.rawValue).joined(separator: ", ")
                throw line.error("unknown bounce category '\(line.arguments[0])' (expected one of: \(names))")
            }
            return BounceCategoryRule(pattern: regex, category: category)
    }
}
