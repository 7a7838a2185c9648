/// Argument access for config consumers: every failure names the file, the
/// line and the directive, so callers never assemble messages by hand.
extension ConfigNode {
    /// The single argument of a directive such as `max-smtp-out 20`.
    public func singleArgument() throws(ConfigError) -> String {
        guard arguments.count == 1 else {
            if arguments.isEmpty { throw error("\(displayName) needs a value") }
            throw error("\(displayName) takes one value, got \(arguments.count): \(rawArguments)")
        }
        return arguments[0]
    }

    /// The arguments of a directive, requiring a count in `range`.
    public func arguments(count range: ClosedRange<Int>, usage: String) throws(ConfigError) -> [String] {
        guard range.contains(arguments.count) else {
            throw error("\(displayName) expects \(usage), got '\(rawArguments)'")
        }
        return arguments
    }

    /// Parses the single argument with `parse`, turning its `ConfigValueError`
    /// into `file:line: directive: message`.
    public func value<T>(_ parse: (String) throws(ConfigValueError) -> T) throws(ConfigError) -> T {
        let text = try singleArgument()
        do {
            return try parse(text)
        } catch {
            throw self.error("\(displayName): \(error.message)")
        }
    }

    /// Parses an arbitrary argument string with `parse`, wrapping errors as `value(_:)` does.
    public func parse<T>(_ text: String, _ parse: (String) throws(ConfigValueError) -> T) throws(ConfigError) -> T {
        do {
            return try parse(text)
        } catch {
            throw self.error("\(displayName): \(error.message)")
        }
    }

    /// Directive children only; a nested block where none is allowed is an error.
    public func directivesOnly() throws(ConfigError) -> [ConfigNode] {
        for child in children where child.isBlock {
            throw child.error("block \(child.displayName) is not allowed inside \(displayName)")
        }
        return children
    }
}

extension ConfigNode {
    /// The single argument as a whole number within `range`.
    public func integer(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        let text = try singleArgument()
        do {
            return try ConfigValue.integer(text, in: range)
        } catch {
            throw self.error("\(displayName): \(error.message)")
        }
    }
}

extension ConfigNode {
    /// Directive children only; each nested block is recorded as an error and skipped.
    public func directivesOnly(diagnostics: inout ConfigDiagnostics) -> [ConfigNode] {
        var out: [ConfigNode] = []
        for child in children {
            if child.isBlock {
                diagnostics.record(child.error("block \(child.displayName) is not allowed inside \(displayName)"))
            } else {
                out.append(child)
            }
        }
        return out
    }
}
