/// Where a config line came from: the file name as given and a 1-based line number.
public struct ConfigLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    /// `file:line`; just `file` for line 0 (the file as a whole: it cannot be read).
    public var description: String { line > 0 ? "\(file):\(line)" : file }
}

/// A configuration error with the place it was found. `description` is the
/// operator-facing `file:line: what is wrong` line that `check-config` prints.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: ConfigLocation
    public var message: String
    /// The directive (or `<block …>`) the line holds, when known: the
    /// description names it when the message does not already, and `--json`
    /// reports it on its own. Not part of equality: two reports of the same
    /// line and message are the same error.
    public var directive: String?

    public init(_ location: ConfigLocation, _ message: String, directive: String? = nil) {
        self.location = location
        self.message = message
        self.directive = directive
    }

    public static func == (a: ConfigError, b: ConfigError) -> Bool {
        a.location == b.location && a.message == b.message
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(location)
        hasher.combine(message)
    }

    /// The message, led by `directive: ` unless it already names the directive.
    public var messageNamingDirective: String {
        guard let directive, !directive.isEmpty else { return message }
        // A block is named enough by `<name`: "unknown block <frob>" for `<frob x>`.
        if directive.hasPrefix("<") {
            if message.contains(String(directive.prefix { $0 != " " && $0 != ">" })) { return message }
        } else if message.hasPrefix(directive) || message.contains("'\(directive)'") || message.contains(" \(directive) ") {
            return message // "spool needs a value", "unknown directive 'frob'"
        }
        return "\(directive): \(message)"
    }

    /// `file:line: directive: message`. Control characters in the message (a
    /// quoted token from a damaged file can hold NUL, CR or ESC) are spelled
    /// `\u{XX}`, so the line prints whole on a terminal: C's stdio would stop
    /// at a NUL, a CR would overwrite it.
    public var description: String { "\(location): \(ConfigError.printable(messageNamingDirective))" }

    static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// A value that does not parse, before it is tied to a line: the config parsers
/// add the location and the directive name (see `ConfigNode.value(_:)`).
public struct ConfigValueError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
