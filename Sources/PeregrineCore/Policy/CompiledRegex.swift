/// A regex compiled once at config load, with the source kept for messages
/// and equality (Swift's `Regex` is neither Equatable nor printable).
public struct CompiledRegex: Hashable, @unchecked Sendable, CustomStringConvertible {
    // Regex values are immutable after construction; sharing them across loops is safe.
    public let source: String
    public let caseInsensitive: Bool
    public let regex: Regex<AnyRegexOutput>

    /// Compiles `pattern` (without slashes). Invalid patterns are a `ConfigValueError`.
    public init(_ pattern: String, caseInsensitive: Bool = false) throws(ConfigValueError) {
        do {
            var compiled = try Regex(pattern)
            if caseInsensitive { compiled = compiled.ignoresCase() }
            self.regex = compiled
        } catch {
            throw ConfigValueError("/\(pattern)/ is not a valid regular expression: \(error)")
        }
        self.source = pattern
        self.caseInsensitive = caseInsensitive
    }

    /// True when the pattern matches anywhere in `text`.
    public func matches(_ text: String) -> Bool {
        (try? regex.firstMatch(in: text)) != nil
    }

    public var description: String { "/\(source)/" + (caseInsensitive ? "i" : "") }

    public static func == (a: CompiledRegex, b: CompiledRegex) -> Bool {
        a.source == b.source && a.caseInsensitive == b.caseInsensitive
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(source)
        hasher.combine(caseInsensitive)
    }
}
