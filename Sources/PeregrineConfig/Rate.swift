/// A throughput limit: `count` events per `interval`, or unlimited.
/// Written `1000/h`, `50/m`, `10/s`, `100/10m` or `unlimited` in configs.
public enum Rate: Hashable, Sendable, CustomStringConvertible {
    case unlimited
    case limited(count: Int, per: Duration)

    /// Nanoseconds between events at an even pace; nil when unlimited.
    public var emissionIntervalNanos: UInt64? {
        switch self {
        case .unlimited: return nil
        case .limited(let count, let per):
            let nanos = per.nanoseconds
            return max(1, nanos / UInt64(max(1, count)))
        }
    }

    public var description: String {
        switch self {
        case .unlimited: return "unlimited"
        case .limited(let count, let per): return "\(count)/\(per.configText)"
        }
    }
}

extension Duration {
    /// Whole nanoseconds, clamped at zero (config durations are never negative).
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        return whole &+ UInt64(attoseconds / 1_000_000_000)
    }

    /// The compact config spelling: `4d12h`, `10m`, `90s` → `1m30s`, `250ms`.
    public var configText: String {
        var millis = Int64(nanoseconds / 1_000_000)
        if millis == 0 { return "0s" }
        var out = ""
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if millis >= size {
                out += "\(millis / size)\(unit)"
                millis %= size
            }
        }
        return out
    }
}
