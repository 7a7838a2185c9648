import PeregrineConfig

extension ConfigValue {
    /// A `/REGEX/` or `/REGEX/i` literal as the lexer keeps it (slashes included).
    public static func regexLiteral(_ text: String) throws(ConfigValueError) -> CompiledRegex {
        var body = Substring(text)
        var caseInsensitive = false
        if body.hasSuffix("/i") && body.count >= 3 {
            caseInsensitive = true
            body = body.dropLast()
        }
        // `//` is PowerMTA's catch-all: it matches every text (a last line that catches the rest).
        if body == "//" { return try CompiledRegex("^", caseInsensitive: caseInsensitive) }
        guard body.count >= 3, body.hasPrefix("/"), body.hasSuffix("/") else {
            throw ConfigValueError("'\(text)' is not a /REGEX/ literal")
        }
        return try CompiledRegex(String(body.dropFirst().dropLast()), caseInsensitive: caseInsensitive)
    }
}
