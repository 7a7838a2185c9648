import Foundation
import PeregrineConfig
import PeregrineAccounting

extension AccountingFileOptions {
    /// Parses `<acct-file PATH>` with `records d,b,t,tq,r`, `max-size 50M`, `move-interval 1h`; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each directive's error and going on.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let path = try block.arguments(count: 1...1, usage: "one file path, as in <acct-file /var/log/peregrine/acct.csv>")[0]
        self.init(path: path)
        var seen: [String: Int] = [:]
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            if let line = seen[node.name] {
                diagnostics.record(node.error("\(node.name) is already set in this block at line \(line)"))
                continue
            }
            seen[node.name] = node.location.line
            do { try apply(node, in: block) } catch { diagnostics.record(error) }
        }
    }

    private mutating func apply(_ node: ConfigNode, in block: ConfigNode) throws(ConfigError) {
            switch node.name {
            case "records":
                guard !node.arguments.isEmpty else { throw node.error("records needs a value") }
                records = try node.parse(node.arguments.joined(separator: ","), ConfigValue.accountingRecordTypes)
            case "max-size":
                maxSize = Int64(try node.value(ConfigValue.size))
            case "move-interval":
                let interval = try node.value(ConfigValue.duration)
                guard interval >= .seconds(1) else { throw node.error("move-interval must be at least 1s") }
                moveInterval = Int64(interval.nanoseconds / 1_000_000_000)
            default:
                throw node.error("unknown directive '\(node.name)' in \(block.displayName)\(ConfigContext.hint(for: node.name))")
            }
    }
}

extension ConfigValue {
    /// `d,b,t,tq,r` (also `f`), comma separated.
    public static func accountingRecordTypes(_ text: String) throws(ConfigValueError) -> Set<AccountingRecordType> {
        var types: Set<AccountingRecordType> = []
        for item in text.split(separator: ",") {
            let code = item.trimmingCharacters(in: .whitespaces)
            guard let type = AccountingRecordType(code: code) else {
                throw ConfigValueError("unknown record type '\(code)' (expected r, d, b, t, tq, f)")
            }
            types.insert(type)
        }
        guard !types.isEmpty else { throw ConfigValueError("no record types given (expected e.g. d,b,t)") }
        return types
    }
}
