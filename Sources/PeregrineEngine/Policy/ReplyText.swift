/// A remote SMTP reply as pattern lists and the bounce classifier see it:
/// basic code, enhanced code (if any) and the text with line breaks and the
/// per-line repeated codes removed. `full` is `"CODE ENHANCED TEXT"`, e.g.
/// `421 4.7.28 Gmail has detected an unusual rate …` — what operators write
/// `/REGEX/` patterns against.
public struct ReplyText: Hashable, Sendable, CustomStringConvertible {
    public var code: Int
    public var enhancedCode: String?
    public var text: String

    /// `lines` are the texts after `CODE-`/`CODE ` of each reply line. An
    /// enhanced code at the start of a line is dropped (Gmail repeats it on
    /// every line); when `enhancedCode` is nil, the first line's is used.
    public init(code: Int, enhancedCode: String? = nil, lines: [String]) {
        self.code = code
        var enhanced = enhancedCode
        var cleaned: [String] = []
        for line in lines {
            var body = Substring(line)
            if let (found, rest) = ReplyText.leadingEnhancedCode(body, basicCode: code) {
                if enhanced == nil { enhanced = found }
                if found == enhanced { body = rest }
            }
            let trimmed = body.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed()
            let trimmedText = String(trimmed)
            if !trimmedText.isEmpty { cleaned.append(trimmedText) }
        }
        self.enhancedCode = enhanced
        self.text = cleaned.joined(separator: " ")
    }

    /// Parses raw reply lines as received (`"421-4.7.0 Try again\r\n421 4.7.0 later"`).
    /// Returns nil when a line does not start with a three-digit code.
    public init?(raw: String) {
        var code: Int?
        var lines: [String] = []
        for line in raw.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            let chars = Array(line)
            guard chars.count >= 3, chars[0...2].allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(String(chars[0...2])) else { return nil }
            if code == nil { code = value }
            var rest = chars.dropFirst(3)
            if let sep = rest.first, sep == "-" || sep == " " { rest = rest.dropFirst() }
            lines.append(String(rest))
        }
        guard let code else { return nil }
        self.init(code: code, lines: lines)
    }

    public var full: String {
        var out = String(code)
        if let enhancedCode { out += " " + enhancedCode }
        if !text.isEmpty { out += " " + text }
        return out
    }

    public var description: String { full }

    public var isPermanent: Bool { code >= 500 && code < 600 }
    public var isTransient: Bool { code >= 400 && code < 500 }

    /// `X.Y.Z` at the start of `body` whose class matches the basic code's first digit.
    private static func leadingEnhancedCode(_ body: Substring, basicCode: Int) -> (String, Substring)? {
        let trimmed = body.drop(while: { $0 == " " })
        let token = trimmed.prefix(while: { !$0.isWhitespace })
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
              let cls = parts[0].first, ["2", "4", "5"].contains(cls), String(cls) == String(basicCode / 100) else {
            return nil
        }
        return (String(token), trimmed.dropFirst(token.count))
    }
}
