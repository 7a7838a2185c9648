#if canImport(Glibc)
import Glibc
#endif
import PeregrineConfig

/// A regex compiled once at config load and matched once per remote reply.
///
/// The engine is POSIX extended regex (glibc `regcomp`/`regexec`), not Swift's
/// `Regex`: measured on this machine (release build, a 200-character Gmail
/// reply), Swift `Regex` took ~85–150 µs per pattern, glibc ~4 µs. A bounce
/// classifier of ~20 patterns would otherwise cost milliseconds per reply.
///
/// Syntax is ERE with the GNU escapes (`\b`, `\w`, `\s`, `\S`, `\<`, `\>`);
/// `\d`/`\D` are translated to `[0-9]`/`[^0-9]` and `\/` to `/` for operators
/// used to Perl-style patterns. Anything ERE cannot express (lookaround, lazy
/// quantifiers) is rejected at load with glibc's message, never silently.
public struct CompiledRegex: Hashable, Sendable, CustomStringConvertible {
    public let source: String
    public let caseInsensitive: Bool
    private let compiled: POSIXRegex

    /// Compiles `pattern` (without slashes). Invalid patterns are a `ConfigValueError`.
    public init(_ pattern: String, caseInsensitive: Bool = false) throws(ConfigValueError) {
        self.source = pattern
        self.caseInsensitive = caseInsensitive
        let translated = CompiledRegex.translate(pattern)
        try CompiledRegex.checkSize(translated)
        self.compiled = try POSIXRegex(translated, caseInsensitive: caseInsensitive)
    }

    /// True when the pattern matches anywhere in `text`.
    public func matches(_ text: String) -> Bool {
        compiled.matches(text)
    }

    public var description: String { "/\(source)/" + (caseInsensitive ? "i" : "") }

    public static func == (a: CompiledRegex, b: CompiledRegex) -> Bool {
        a.source == b.source && a.caseInsensitive == b.caseInsensitive
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(source)
        hasher.combine(caseInsensitive)
    }

    /// The most positions a pattern may expand to when glibc copies repeated
    /// parts (`x{n}` is n copies of x, `x+` is two): far above any reply
    /// pattern, far below what exhausts memory.
    static let maxExpandedSize = 20_000

    /// Refuses patterns that glibc's `regcomp` would expand without bound: the
    /// config fuzz target found `a\++++…+` (stacked quantifiers, undefined in
    /// POSIX ERE) taking over 3 GB in `duplicate_tree`, and nested counted
    /// repetitions multiply the same way. Counts what the compiled tree will
    /// hold, approximately: every atom 1, a repeated atom or group multiplied
    /// by its largest count (2 for `+`, 1 for `*` and `?`).
    static func checkSize(_ pattern: String) throws(ConfigValueError) {
        let bytes = Array(pattern.utf8)
        var groups: [Int] = [0]      // running size of each open group
        var last = 0                 // size of the atom or group a quantifier would repeat
        var afterQuantifier = false
        var i = 0
        func tooBig() -> ConfigValueError {
            ConfigValueError("/\(pattern)/ expands to more than \(maxExpandedSize) positions when compiled; simplify its repetitions")
        }
        while i < bytes.count {
            let c = bytes[i]
            var quantifierCount: Int? = nil
            switch c {
            case UInt8(ascii: "\\"):
                i += 1; last = 1; groups[groups.count - 1] += 1; afterQuantifier = false
            case UInt8(ascii: "["):
                // A bracket expression is one position; skip to its closing ']'.
                var j = i + 1
                if j < bytes.count, bytes[j] == UInt8(ascii: "^") { j += 1 }
                if j < bytes.count, bytes[j] == UInt8(ascii: "]") { j += 1 }
                while j < bytes.count, bytes[j] != UInt8(ascii: "]") { j += 1 }
                i = j; last = 1; groups[groups.count - 1] += 1; afterQuantifier = false
            case UInt8(ascii: "("):
                groups.append(0); afterQuantifier = false
            case UInt8(ascii: ")"):
                last = groups.count > 1 ? groups.removeLast() : 0
                groups[groups.count - 1] += last; afterQuantifier = false
            case UInt8(ascii: "*"), UInt8(ascii: "?"):
                quantifierCount = 1
            case UInt8(ascii: "+"):
                quantifierCount = 2
            case UInt8(ascii: "{"):
                var j = i + 1, largest = 0, number = 0
                while j < bytes.count, bytes[j] != UInt8(ascii: "}") {
                    if bytes[j] >= 48 && bytes[j] <= 57 { number = min(number * 10 + Int(bytes[j] - 48), 1_000_000) }
                    else { largest = max(largest, number); number = 0 }
                    j += 1
                }
                quantifierCount = max(largest, number, 1)
                i = j
            case UInt8(ascii: "|"):
                afterQuantifier = false
            default:
                last = 1; groups[groups.count - 1] += 1; afterQuantifier = false
            }
            if let count = quantifierCount {
                if afterQuantifier {
                    throw ConfigValueError("/\(pattern)/ repeats a repetition (e.g. `a++` or `a{2}*`), which POSIX leaves undefined; write one quantifier")
                }
                groups[groups.count - 1] += last * (count - 1)
                last *= count
                afterQuantifier = true
            }
            if groups.contains(where: { $0 > maxExpandedSize }) || last > maxExpandedSize { throw tooBig() }
            i += 1
        }
    }

    /// Perl-style shorthands ERE lacks, outside bracket expressions.
    static func translate(_ pattern: String) -> String {
        var out = ""
        var chars = pattern.makeIterator()
        var inBracket = false
        while let c = chars.next() {
            if c == "\\" {
                guard let next = chars.next() else { out.append(c); break }
                if !inBracket && next == "d" { out += "[0-9]"; continue }
                if !inBracket && next == "D" { out += "[^0-9]"; continue }
                if next == "/" { out.append("/"); continue }
                out.append(c)
                out.append(next)
                continue
            }
            if c == "[" { inBracket = true } else if c == "]" { inBracket = false }
            out.append(c)
        }
        return out
    }
}

/// Owns one glibc `regex_t`. Immutable after compilation; glibc's `regexec`
/// may be called from several threads at once on the same pattern.
final class POSIXRegex: @unchecked Sendable {
    private let pointer: UnsafeMutablePointer<regex_t>

    init(_ pattern: String, caseInsensitive: Bool) throws(ConfigValueError) {
        // Compile before `pointer` is set: a throwing init that never set its
        // stored properties does not run deinit, so nothing is freed twice.
        let candidate = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        candidate.initialize(to: regex_t())
        var flags = REG_EXTENDED | REG_NOSUB
        if caseInsensitive { flags |= REG_ICASE }
        let rc = regcomp(candidate, pattern, flags)
        guard rc == 0 else {
            var buffer = [CChar](repeating: 0, count: 256)
            regerror(rc, candidate, &buffer, buffer.count)
            candidate.deallocate()
            let reason = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ConfigValueError("/\(pattern)/ is not a valid regular expression: \(reason)")
        }
        pointer = candidate
    }

    deinit {
        regfree(pointer)
        pointer.deallocate()
    }

    func matches(_ text: String) -> Bool {
        regexec(pointer, text, 0, nil, 0) == 0
    }
}
