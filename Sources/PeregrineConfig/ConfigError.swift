/// Where a config line came from: the file name as given and a 1-based line number.
public struct ConfigLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { "\(file):\(line)" }
}

/// A configuration error with the place it was found. `description` is the
/// operator-facing `file:line: what is wrong` line that `check-config` prints.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: ConfigLocation
    public var message: String

    public init(_ location: ConfigLocation, _ message: String) {
        self.location = location
        self.message = message
    }

    /// Control characters in the message (a quoted token from a damaged file
    /// can hold NUL, CR or ESC) are spelled `\u{XX}`, so the line prints whole
    /// on a terminal: C's stdio would stop at a NUL, a CR would overwrite it.
    public var description: String { "\(location): \(ConfigError.printable(message))" }

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
