#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The generic block-structured config syntax shared by the daemon's config
/// and the sink's ISP profiles:
///
/// ```
/// # comment
/// spool /var/spool/peregrine
/// <domain gmail.com>
///     max-smtp-out 5
///     route "[127.0.1.1]:2525"
/// </domain>
/// ```
///
/// This layer knows no directive names: it produces a tree of `ConfigNode`s
/// with file and line, and rejects only structural mistakes (unclosed, stray or
/// mismatched blocks, malformed tags, bad quoting). A line that starts with a
/// `/REGEX/` literal (as in `<bounce-category-patterns>`) is a directive whose
/// name is that literal, verbatim. Consumers walk the tree and
/// reject what they do not know, using `ConfigNode.error(_:)` for the message.
public enum BlockConfig {
    /// Parses config text; `file` is used in locations only. Throws the first error.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> [ConfigNode] {
        var diagnostics = ConfigDiagnostics()
        let nodes = parse(text, file: file, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
        return nodes
    }

    /// Parses config text, recording every structural error and going on: a
    /// bad line is skipped, a mismatched closing tag closes the block it names
    /// if one is open (else it is ignored), blocks still open at the end are
    /// closed, so the consumer still checks everything that can be read.
    public static func parse(_ text: String, file: String, diagnostics: inout ConfigDiagnostics) -> [ConfigNode] {
        // A stack of open blocks; index 0 collects the top level. A block whose
        // tag is malformed is still opened (so its closing tag matches) but
        // dropped when closed: its contents would only add confusing errors.
        var stack: [ConfigNode] = [ConfigNode(kind: .block, name: "", arguments: [], rawArguments: "",
                                              location: ConfigLocation(file: file, line: 0))]
        var discarded: [Bool] = [false]
        func close() {
            let open = stack.removeLast()
            if !discarded.removeLast() { stack[stack.count - 1].children.append(open) }
        }
        var lineNumber = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let location = ConfigLocation(file: file, line: lineNumber)
            var chars = Array(rawLine)
            if chars.last == "\r" { chars.removeLast() }
            let tokens: [BlockConfigLexer.Token]
            do { tokens = try BlockConfigLexer.tokenize(chars, location: location) } catch {
                diagnostics.record(error)
                continue
            }
            guard let first = tokens.first else { continue }

            if !first.quoted, first.text.hasPrefix("<") {
                let tag: Tag
                do { tag = try parseTag(tokens, chars, location: location) } catch {
                    diagnostics.record(error)
                    if first.text.hasPrefix("</") {
                        if stack.count > 1 { close() } // a closing tag with extra text still closes
                    } else if let name = roughTagName(first.text) {
                        stack.append(ConfigNode(kind: .block, name: name, arguments: [], rawArguments: "", location: location))
                        discarded.append(true)
                    }
                    continue
                }
                if tag.closing {
                    guard stack.count > 1, let open = stack.last else {
                        diagnostics.record(ConfigError(location, "</\(tag.name)> closes no open block"))
                        continue
                    }
                    guard open.name == tag.name else {
                        diagnostics.record(ConfigError(location, "</\(tag.name)> does not match \(open.displayName) opened at line \(open.location.line)"))
                        // Close up to the block it names, if one is open; else take it
                        // for a misspelt end of the innermost block.
                        if let depth = stack.indices.dropFirst().last(where: { stack[$0].name == tag.name }) {
                            while stack.count > depth { close() }
                        } else {
                            close()
                        }
                        continue
                    }
                    close()
                } else {
                    stack.append(ConfigNode(kind: .block, name: tag.name, arguments: tag.arguments,
                                            rawArguments: tag.raw, location: location))
                    discarded.append(false)
                }
                continue
            }

            if first.quoted {
                diagnostics.record(ConfigError(location, first.text.isEmpty ? "empty directive name" : "a directive name cannot be quoted (\"\(first.text)\")"))
                continue
            }
            // `/REGEX/ category` lines (bounce-category-patterns) keep the regex verbatim as the name.
            let isPatternLine = first.text.hasPrefix("/")
            guard isPatternLine || isValidName(first.text) else {
                diagnostics.record(ConfigError(location, "'\(first.text)' is not a directive name"))
                continue
            }
            let raw = rawText(chars, from: first.end, to: tokens.last?.end ?? first.end)
            stack[stack.count - 1].children.append(
                ConfigNode(kind: .directive, name: isPatternLine ? first.text : first.text.lowercased(),
                           arguments: tokens.dropFirst().map(\.text), rawArguments: raw, location: location))
        }
        while stack.count > 1, let open = stack.last {
            if !(discarded.last ?? false) {
                diagnostics.record(open.error("\(open.displayName) is not closed (missing </\(open.name)>)"))
            }
            close()
        }
        return stack[0].children
    }

    /// The name in a malformed opening tag (`<domain x.com` without `>`), for recovery.
    private static func roughTagName(_ token: String) -> String? {
        let name = token.dropFirst().prefix { $0 != ">" }
        guard !name.hasPrefix("/"), isValidName(String(name)) else { return nil }
        return name.lowercased()
    }

    /// Reads and parses a file. Throws the first error.
    public static func load(path: String) throws(ConfigError) -> [ConfigNode] {
        var diagnostics = ConfigDiagnostics()
        let nodes = load(path: path, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
        return nodes
    }

    /// Reads and parses a file and the files it `include`s, recording every
    /// error (see `ConfigFile.read` for unreadable files and invalid UTF-8).
    public static func load(path: String, diagnostics: inout ConfigDiagnostics) -> [ConfigNode] {
        loadExpandingIncludes(path: path, includedFrom: nil, chain: [], diagnostics: &diagnostics)
    }

    private struct Tag {
        var closing: Bool
        var name: String
        var arguments: [String]
        var raw: String
    }

    private static func parseTag(_ tokensIn: [BlockConfigLexer.Token], _ chars: [Character],
                                 location: ConfigLocation) throws(ConfigError) -> Tag {
        var tokens = tokensIn
        // Drop the leading '<' from the first token.
        tokens[0].text.removeFirst()
        tokens[0].start += 1
        // Find the closing '>': the last token ends with it (unquoted) or is it.
        guard let last = tokens.last else { throw ConfigError(location, "empty block tag") }
        if tokens.dropLast().contains(where: { !$0.quoted && $0.text.hasSuffix(">") }) {
            throw ConfigError(location, "unexpected text after '>' in block tag")
        }
        if !last.quoted && last.text.hasSuffix(">") {
            tokens[tokens.count - 1].text.removeLast()
            tokens[tokens.count - 1].end -= 1
            if tokens[tokens.count - 1].text.isEmpty && !tokens[tokens.count - 1].quoted {
                tokens.removeLast()
            }
        } else {
            throw ConfigError(location, "block tag is missing its closing '>'")
        }
        guard let head = tokens.first, !head.text.isEmpty else { throw ConfigError(location, "empty block tag") }
        var closing = false
        var nameText = head.text
        if !head.quoted && nameText.hasPrefix("/") {
            closing = true
            nameText.removeFirst()
        }
        guard !nameText.isEmpty else { throw ConfigError(location, "empty block tag") }
        guard !head.quoted, isValidName(nameText) else {
            throw ConfigError(location, "'\(nameText)' is not a block name")
        }
        let name = nameText.lowercased()
        let arguments = tokens.dropFirst().map(\.text)
        if closing && !arguments.isEmpty {
            throw ConfigError(location, "closing tag </\(name)> takes no arguments")
        }
        let raw = rawText(chars, from: head.end, to: tokens.last?.end ?? head.end)
        return Tag(closing: closing, name: name, arguments: arguments, raw: raw)
    }

    private static func rawText(_ chars: [Character], from: Int, to: Int) -> String {
        guard from < to else { return "" }
        return String(chars[from..<to]).trimmingCharacters(in: .whitespaces)
    }

    package static func isValidName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first.properties.isAlphabetic || first == "_" else { return false }
        return text.unicodeScalars.allSatisfy { s in
            (s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s))) || s == "-" || s == "_" || s == "."
        }
    }
}
