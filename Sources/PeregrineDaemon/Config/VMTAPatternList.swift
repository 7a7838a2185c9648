import PeregrineConfig
import PeregrineEngine

/// PowerMTA's `<pattern-list NAME>`: picks the virtual-mta (or pool) of an
/// injected message from its envelope sender or a header, for the sources
/// that name it (`pattern-list NAME` in `<source>`). Lines, first match wins:
///
/// ```
/// <pattern-list senders>
///     mail-from /@news\.example\.com$/ virtual-mta=bulk-pool
///     header X-Campaign /^txn-/ virtual-mta=transactional
///     mail-from // virtual-mta=shared-pool      # catch-all
/// </pattern-list>
/// ```
///
/// An `X-Virtual-MTA:` header (process-x-virtual-mta) still wins: it is the
/// injector's explicit choice. `rcpt-to` lines are refused: one message has
/// one virtual-mta here, and a per-recipient choice would need the message split.
public struct VMTAPatternList: Hashable, Sendable {
    public enum Field: Hashable, Sendable {
        case mailFrom
        /// A header's unfolded value (the first field of that name).
        case header(String)
    }

    public struct Rule: Hashable, Sendable {
        public var field: Field
        public var pattern: CompiledRegex
        public var virtualMTA: String
        public var location: ConfigLocation
    }

    public var name: String
    public var rules: [Rule]

    /// The virtual-mta of the first rule that matches, if any.
    public func virtualMTA(mailFrom: String, header: (String) -> String?) -> String? {
        for rule in rules {
            switch rule.field {
            case .mailFrom:
                if rule.pattern.matches(mailFrom) { return rule.virtualMTA }
            case .header(let name):
                if let value = header(name), rule.pattern.matches(value) { return rule.virtualMTA }
            }
        }
        return nil
    }
}

extension VMTAPatternList {
    /// Parses `<pattern-list NAME>`, recording each line's error.
    init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let name = try block.arguments(count: 1...1, usage: "one list name, as in <pattern-list senders>")[0].lowercased()
        var rules: [Rule] = []
        for line in block.directivesOnly(diagnostics: &diagnostics) {
            do { rules.append(try Self.rule(line, in: block)) } catch { diagnostics.record(error) }
        }
        self.init(name: name, rules: rules)
    }

    private static func rule(_ line: ConfigNode, in block: ConfigNode) throws(ConfigError) -> Rule {
        var args = line.arguments[...]
        let field: Field
        switch line.name {
        case "mail-from":
            field = .mailFrom
        case "header":
            guard let header = args.popFirst(), !header.hasPrefix("/") else {
                throw line.error("header expects NAME /REGEX/ virtual-mta=NAME, got '\(line.rawArguments)'")
            }
            field = .header(header)
        case "rcpt-to":
            throw line.error("rcpt-to is not supported in <pattern-list> yet (a message has one virtual-mta in Peregrine; "
                             + "choosing per recipient would need the message split); it is refused rather than ignored")
        default:
            throw line.error("unknown directive '\(line.name)' in \(block.displayName) "
                             + "(expected: mail-from /REGEX/ virtual-mta=NAME, header NAME /REGEX/ virtual-mta=NAME)")
        }
        guard args.count == 2 else {
            throw line.error("\(line.name) expects \(line.name == "header" ? "NAME " : "")/REGEX/ virtual-mta=NAME, got '\(line.rawArguments)'")
        }
        let pattern = try line.parse(args[args.startIndex], ConfigValue.regexLiteral)
        let action = args[args.startIndex + 1]
        guard action.lowercased().hasPrefix("virtual-mta="), action.count > "virtual-mta=".count else {
            throw line.error("\(line.name): unknown action '\(action)' (expected virtual-mta=NAME)")
        }
        return Rule(field: field, pattern: pattern, virtualMTA: String(action.dropFirst("virtual-mta=".count)).lowercased(),
                    location: line.location)
    }
}
