/// One entry of a block-structured config file: either a directive line
/// (`max-smtp-out 5`) or a block (`<domain gmail.com>` … `</domain>`) with children.
///
/// Names are lower-cased (directives and block names are case-insensitive, as
/// in PowerMTA), except a leading `/REGEX/` which is kept verbatim as the name;
/// arguments keep their case. Regex literals (`/a b/`) and quoted
/// strings (`"a b"`) are single arguments, with the quotes removed but the
/// slashes kept, so a consumer can tell a regex from a word.
public struct ConfigNode: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case directive
        case block
    }

    public var kind: Kind
    public var name: String
    public var arguments: [String]
    /// The text after the name, trimmed and without a trailing comment, for
    /// consumers whose values have their own syntax.
    public var rawArguments: String
    public var location: ConfigLocation
    /// Children of a block, in file order; always empty for a directive.
    public var children: [ConfigNode]

    public init(kind: Kind, name: String, arguments: [String], rawArguments: String,
                location: ConfigLocation, children: [ConfigNode] = []) {
        self.kind = kind
        self.name = name
        self.arguments = arguments
        self.rawArguments = rawArguments
        self.location = location
        self.children = children
    }

    public var isBlock: Bool { kind == .block }

    /// How the node is written in the file, for messages: `<domain gmail.com>` or `max-smtp-out`.
    public var displayName: String {
        switch kind {
        case .block: return arguments.isEmpty ? "<\(name)>" : "<\(name) \(arguments.joined(separator: " "))>"
        case .directive: return name
        }
    }

    /// An error at this node's line.
    public func error(_ message: String) -> ConfigError {
        // A `/REGEX/ category` line's name is its regex: messages quote it where it helps.
        ConfigError(location, message, directive: kind == .directive && name.hasPrefix("/") ? nil : displayName)
    }
}
