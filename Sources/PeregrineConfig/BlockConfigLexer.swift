/// Splits one config line into tokens.
///
/// Rules (PowerMTA's, plus what our values need):
/// - whitespace separates tokens; a token that starts with `#` begins a comment;
///   a `#` inside a word (a URL fragment) is kept;
/// - `"…"` is one token without the quotes; `\"` and `\\` escape inside it;
/// - a token starting with `/` that has a closing `/` (optionally followed by
///   the flag `i`) before whitespace or the end is a regex literal and may hold
///   spaces and `#`; the slashes stay in the token. A path such as
///   `/var/spool/x` has no such closing slash and lexes as a plain word.
struct BlockConfigLexer {
    struct Token: Hashable {
        var text: String
        var quoted: Bool
        /// Character offsets in the line, for recovering raw text.
        var start: Int
        var end: Int
    }

    static func tokenize(_ line: [Character], location: ConfigLocation) throws(ConfigError) -> [Token] {
        var tokens: [Token] = []
        var i = 0
        let n = line.count
        while i < n {
            let c = line[i]
            if c.isWhitespace { i += 1; continue }
            if c == "#" { break }
            if c == "\"" {
                var text = ""
                var j = i + 1
                var closed = false
                while j < n {
                    let d = line[j]
                    if d == "\\", j + 1 < n, line[j + 1] == "\"" || line[j + 1] == "\\" {
                        text.append(line[j + 1]); j += 2; continue
                    }
                    if d == "\"" { closed = true; break }
                    text.append(d); j += 1
                }
                guard closed else { throw ConfigError(location, "unterminated quoted value (missing closing '\"')") }
                let end = j + 1
                if end < n, !line[end].isWhitespace, line[end] != ">", line[end] != "#" {
                    throw ConfigError(location, "unexpected '\(line[end])' right after a quoted value")
                }
                tokens.append(Token(text: text, quoted: true, start: i, end: end))
                i = end
                continue
            }
            if c == "/", let end = regexLiteralEnd(line, from: i) {
                tokens.append(Token(text: String(line[i..<end]), quoted: false, start: i, end: end))
                i = end
                continue
            }
            var j = i
            while j < n, !line[j].isWhitespace { j += 1 }
            tokens.append(Token(text: String(line[i..<j]), quoted: false, start: i, end: j))
            i = j
        }
        return tokens
    }

    /// The end offset (exclusive) of a `/regex/` or `/regex/i` literal starting at `start`, if any.
    private static func regexLiteralEnd(_ line: [Character], from start: Int) -> Int? {
        let n = line.count
        var j = start + 1
        while j < n {
            let d = line[j]
            if d == "\\" { j += 2; continue }
            if d == "/", j > start + 1 {
                var end = j + 1
                if end < n, line[end] == "i" { end += 1 }
                if end == n || line[end].isWhitespace { return end }
            }
            j += 1
        }
        return nil
    }
}
