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
        var seen = ConfigDirectiveLines(repeatable: ["record-fields"])
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do { try apply(node, in: block, diagnostics: &diagnostics) } catch { diagnostics.record(error) }
        }
        if pipeProgram != nil {
            // A program reads the records: there is no file to rotate or delete.
            for node in block.children where ["max-size", "move-interval", "delete-after", "world-readable"].contains(node.name) {
                diagnostics.record(node.error("\(node.name) does not apply to \(block.displayName): its records go to a program, not a file"))
            }
            if let program = pipeProgram, !program.hasPrefix("/") {
                diagnostics.record(block.error("\(block.displayName): the program must be an absolute path, as in <acct-file |/usr/local/bin/acct-loader>"))
            }
        }
    }

    private mutating func apply(_ node: ConfigNode, in block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
            switch node.name {
            case "record-fields":
                try applyRecordFields(node, diagnostics: &diagnostics)
            case "world-readable":
                worldReadable = try node.value(ConfigValue.bool)
            case "delete-after":
                if let age = try node.value(ConfigValue.durationOrNever) {
                    guard age >= .seconds(1) else { throw node.error("delete-after must be at least 1s (or never)") }
                    deleteAfter = age.components.seconds
                } else {
                    deleteAfter = nil
                }
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

extension AccountingFileOptions {
    /// `record-fields TYPE field,field,…` (PowerMTA names; TYPE as `d` or
    /// `delivery`…): the fields of that record type, in order. `*` stands for
    /// every field not named yet, `!field` removes one (`jobId,*,!rcpt`).
    /// One line per type; `type` is always the first column and cannot be chosen.
    mutating func applyRecordFields(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        guard node.arguments.count >= 2 else {
            throw node.error("record-fields expects TYPE field,field,… (e.g. record-fields d timeLogged,orig,rcpt,dsnStatus)")
        }
        let typeName = node.arguments[0].lowercased()
        guard let type = Self.recordTypeNames[typeName] ?? AccountingRecordType(code: typeName) else {
            throw node.error("record-fields: unknown record type '\(node.arguments[0])' (expected d, b, t, tq, r, f or delivery, bounce, …)")
        }
        if recordFields[type] != nil { throw node.error("record-fields for \(type.rawValue) records is already set in this block") }
        let known = AccountingRecord.fieldNames.dropFirst()
        let byLowercase = Dictionary(uniqueKeysWithValues: known.map { ($0.lowercased(), $0) })
        var fields: [String] = []
        for item in node.arguments.dropFirst().joined(separator: ",").split(separator: ",") {
            let text = item.trimmingCharacters(in: .whitespaces)
            if text == "*" {
                for f in known where !fields.contains(f) { fields.append(f) }
                continue
            }
            let exclude = text.hasPrefix("!")
            let name = exclude ? String(text.dropFirst()) : text
            if name.lowercased() == "type" { continue }  // always there
            guard let field = byLowercase[name.lowercased()] else {
                if AccountingColumns.unfilledFields.contains(name) {
                    if !exclude { diagnostics.warn(node, "record-fields: \(name) is not filled by Peregrine; its column stays empty") }
                    if !exclude && !fields.contains(name) { fields.append(name) }
                    continue
                }
                throw node.error("record-fields: unknown field '\(name)' (known: \(known.joined(separator: ", ")))")
            }
            if exclude { fields.removeAll { $0 == field } } else if !fields.contains(field) { fields.append(field) }
        }
        guard !fields.isEmpty else { throw node.error("record-fields \(node.arguments[0]) leaves no field") }
        recordFields[type] = fields
    }

    static let recordTypeNames: [String: AccountingRecordType] = [
        "delivery": .delivered, "bounce": .bounced, "transient": .transient, "transient-queue": .transientQueue,
        "receipt": .received, "received": .received, "feedback-loop": .feedbackLoop,
        "suppressed": .suppressed,
        "webhook-undeliverable": .webhookUndeliverable,
    ]
}

extension ConfigValue {
    /// `d,b,t,tq,r` (also `f`), comma separated; `all` is every type.
    public static func accountingRecordTypes(_ text: String) throws(ConfigValueError) -> Set<AccountingRecordType> {
        if text.lowercased() == "all" { return Set(AccountingRecordType.allCases) }
        var types: Set<AccountingRecordType> = []
        for item in text.split(separator: ",") {
            let code = item.trimmingCharacters(in: .whitespaces)
            guard let type = AccountingRecordType(code: code) else {
                throw ConfigValueError("unknown record type '\(code)' (expected r, d, b, t, tq, f, rb, s)")
            }
            types.insert(type)
        }
        guard !types.isEmpty else { throw ConfigValueError("no record types given (expected e.g. d,b,t)") }
        return types
    }
}
