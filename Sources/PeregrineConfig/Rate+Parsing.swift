extension ConfigValue {
    /// `unlimited`, `1000/h`, `50/m`, `10/s`, `2/d`, or `100/10m` (any duration after the slash).
    public static func rate(_ text: String) throws(ConfigValueError) -> Rate {
        if text.lowercased() == "unlimited" { return .unlimited }
        let usage = "expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited"
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ConfigValueError("'\(text)' is not a rate (\(usage))")
        }
        guard parts[0].allSatisfy({ $0.isASCII && $0.isNumber }), parts[0].count <= 12, let count = Int(parts[0]) else {
            throw ConfigValueError("'\(text)' is not a rate: '\(parts[0])' is not a count (\(usage))")
        }
        guard count > 0 else {
            throw ConfigValueError("'\(text)': a rate needs a count of at least 1 (pause the queue to stop it)")
        }
        var intervalText = String(parts[1])
        if let first = intervalText.first, first.isLetter { intervalText = "1" + intervalText }
        let interval: Duration
        do {
            interval = try duration(intervalText)
        } catch {
            throw ConfigValueError("'\(text)' is not a rate: '\(parts[1])' is not an interval (\(usage))")
        }
        guard interval > .zero else { throw ConfigValueError("'\(text)': the interval must be longer than zero") }
        return .limited(count: count, per: interval)
    }
}
