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

    public var description: String { "\(location): \(message)" }
}

/// A value that does not parse, before it is tied to a line: the config parsers
/// add the location and the directive name (see `ConfigNode.value(_:)`).
public struct ConfigValueError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
