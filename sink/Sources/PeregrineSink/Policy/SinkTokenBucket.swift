/// A GCRA token bucket in nanoseconds: `interval` between events at an even
/// pace, `burst` events allowed at once. Refused events do not consume.
struct SinkTokenBucket: Sendable {
    let interval: UInt64
    let tolerance: UInt64
    private var tat: UInt64 = 0

    init(interval: UInt64, burst: Int) {
        self.interval = max(1, interval)
        self.tolerance = self.interval &* UInt64(max(0, burst - 1))
    }

    /// Takes one token if the bucket has one.
    mutating func take(now: UInt64) -> Bool {
        let t = max(tat, now)
        if t > now &+ tolerance { return false }
        tat = t &+ interval
        return true
    }
}
