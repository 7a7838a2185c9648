/// Parsers for the scalar value syntaxes of PowerMTA-style configs. Each one
/// throws a `ConfigValueError` whose message quotes the text and says what was
/// expected; `ConfigNode.value(_:)` adds `file:line: directive:`.
public enum ConfigValue {
    /// `90s`, `10m`, `1h30m`, `4d12h`, `250ms`; a bare number is seconds.
    public static func duration(_ text: String) throws(ConfigValueError) -> Duration {
        let chars = Array(text.lowercased())
        guard !chars.isEmpty else { throw ConfigValueError("empty duration") }
        var i = 0
        var totalMillis: Int64 = 0
        let limitMillis: Int64 = 100 * 365 * 86_400_000
        while i < chars.count {
            var digits = ""
            while i < chars.count, chars[i].isASCII, chars[i].isNumber { digits.append(chars[i]); i += 1 }
            guard !digits.isEmpty else {
                throw ConfigValueError("'\(text)' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
            }
            var unit = ""
            while i < chars.count, chars[i].isLetter { unit.append(chars[i]); i += 1 }
            let millisPerUnit: Int64
            switch unit {
            case "ms": millisPerUnit = 1
            case "", "s": millisPerUnit = 1000
            case "m", "min": millisPerUnit = 60_000 // PowerMTA also writes 50/min
            case "h": millisPerUnit = 3_600_000
            case "d": millisPerUnit = 86_400_000
            case "w": millisPerUnit = 7 * 86_400_000
            default:
                throw ConfigValueError("'\(text)' is not a duration: unknown unit '\(unit)' (use ms, s, m, h, d, w)")
            }
            if unit.isEmpty && i < chars.count {
                throw ConfigValueError("'\(text)' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
            }
            guard digits.count <= 12, let value = Int64(digits), value <= limitMillis / millisPerUnit else {
                throw ConfigValueError("'\(text)' is too long a duration")
            }
            totalMillis += value * millisPerUnit
            guard totalMillis <= limitMillis else { throw ConfigValueError("'\(text)' is too long a duration") }
        }
        return .milliseconds(totalMillis)
    }

    /// A duration or `never` (nil), for settings such as `backoff-to-normal-after`.
    public static func durationOrNever(_ text: String) throws(ConfigValueError) -> Duration? {
        if text.lowercased() == "never" { return nil }
        do {
            return try duration(text)
        } catch {
            throw ConfigValueError("\(error.message), or never")
        }
    }

    /// `1048576`, `100k`, `20M`, `1G` (binary multiples; a trailing `b`/`B` is allowed).
    public static func size(_ text: String) throws(ConfigValueError) -> Int {
        var body = Substring(text)
        if body.count > 1, let last = body.last, last == "b" || last == "B",
           let prev = body.dropLast().last, prev.isLetter {
            body = body.dropLast()
        }
        var multiplier = 1
        if let last = body.last, last.isLetter {
            switch last.lowercased() {
            case "k": multiplier = 1 << 10
            case "m": multiplier = 1 << 20
            case "g": multiplier = 1 << 30
            case "b": multiplier = 1
            default:
                throw ConfigValueError("'\(text)' is not a size: unknown unit '\(last)' (use bytes, k, M, G)")
            }
            body = body.dropLast()
        }
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && $0.isNumber }), body.count <= 15, let value = Int(body) else {
            throw ConfigValueError("'\(text)' is not a size (expected bytes or e.g. 100k, 20M, 1G)")
        }
        let (result, overflow) = value.multipliedReportingOverflow(by: multiplier)
        guard !overflow, result <= Int(Int64.max / 4) else { throw ConfigValueError("'\(text)' is too large a size") }
        return result
    }

    /// `yes`/`no` (also `true`/`false`, `on`/`off`).
    public static func bool(_ text: String) throws(ConfigValueError) -> Bool {
        switch text.lowercased() {
        case "yes", "true", "on": return true
        case "no", "false", "off": return false
        default: throw ConfigValueError("'\(text)' is not yes or no")
        }
    }

    /// A whole number within `range`.
    public static func integer(_ text: String, in range: ClosedRange<Int>) throws(ConfigValueError) -> Int {
        guard !text.isEmpty, text.count <= 18, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text) else {
            throw ConfigValueError("'\(text)' is not a whole number")
        }
        guard range.contains(value) else {
            throw ConfigValueError("\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// A TCP/UDP port, 1...65535.
    public static func port(_ text: String) throws(ConfigValueError) -> UInt16 {
        guard let value = UInt16(text), value > 0 else {
            throw ConfigValueError("'\(text)' is not a port number (1-65535)")
        }
        return value
    }
}
