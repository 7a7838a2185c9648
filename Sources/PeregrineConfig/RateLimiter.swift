/// A rate limit as GCRA (generic cell rate algorithm): one timestamp of state
/// (the theoretical arrival time) instead of a token count, so it needs no
/// refill timer and is exact at any rate. Time is a monotonic nanosecond clock
/// passed in by the caller (the loop reads it once per turn), never `Date`.
///
/// `burst` is how many events may go back to back after an idle period;
/// `burst: 1` spaces events evenly (`1000/h` → one every 3.6 s).
///
/// A policer (the default) charges from the moment of the request, as GCRA
/// does. A pacer (`keepsSchedule`) is asked by a caller that sleeps until
/// `nextAllowed` and wakes a little late (a 1 ms timer tick, a busy loop):
/// charging from the late wake-up would lose that lateness at every event,
/// and the rate sent would fall short of the rate configured (by 10% at
/// 100/s with 1 ms of lateness). So a pacer asked a scheduling hiccup
/// after its slot (less than one interval, at most `scheduleSlack`) takes
/// that slot, and the next one follows it; later than that it was idle, and
/// starts afresh (so a slow rate never sends two close together).
public struct RateLimiter: Hashable, Sendable {
    public private(set) var rate: Rate
    public private(set) var burst: Int
    public let keepsSchedule: Bool
    /// The most a pacer's caller may be late and still take its slot (ns).
    public static let scheduleSlack: UInt64 = 100_000_000
    /// T: nanoseconds per event; 0 when unlimited.
    private var emissionInterval: UInt64
    /// τ = (burst - 1) · T.
    private var tolerance: UInt64
    /// TAT: when the next event would be due at an even pace.
    private var theoreticalArrival: UInt64 = 0

    public init(rate: Rate, burst: Int = 1, keepsSchedule: Bool = false) {
        self.rate = rate
        self.burst = max(1, burst)
        self.keepsSchedule = keepsSchedule
        self.emissionInterval = rate.emissionIntervalNanos ?? 0
        self.tolerance = 0
        self.tolerance = Self.product(emissionInterval, UInt64(self.burst - 1))
    }

    public var isUnlimited: Bool { emissionInterval == 0 }

    /// Takes `cost` events' worth of the rate if that conforms now; false leaves the state unchanged.
    /// After an idle period any cost is allowed (and pushes later events back), so a
    /// cost larger than the burst can never wedge the limiter.
    public mutating func tryAcquire(now: UInt64, cost: Int = 1) -> Bool {
        guard !isUnlimited else { return true }
        guard conforms(now: now, cost: cost) else { return false }
        var start = max(theoreticalArrival, now)
        // Late by a hiccup: the slot was this caller's (an idle pacer starts afresh).
        if keepsSchedule, theoreticalArrival < now, now - theoreticalArrival < min(emissionInterval, Self.scheduleSlack) {
            start = theoreticalArrival
        }
        theoreticalArrival = Self.sum(start, Self.product(emissionInterval, UInt64(max(1, cost))))
        return true
    }

    /// The earliest time (≥ now) at which `tryAcquire(now:cost:)` will succeed.
    public func nextAllowed(now: UInt64, cost: Int = 1) -> UInt64 {
        guard !isUnlimited else { return now }
        let extra = Self.product(emissionInterval, UInt64(max(1, cost) - 1))
        let byTolerance = Self.sum(theoreticalArrival, extra) &- min(tolerance, Self.sum(theoreticalArrival, extra))
        return max(now, min(theoreticalArrival, byTolerance))
    }

    /// Swaps the rate at runtime (backoff in, backoff out). Pending debt is kept
    /// but capped at one new interval, so leaving a slow backoff rate does not
    /// make the queue wait out the old slow spacing.
    public mutating func setRate(_ newRate: Rate, burst newBurst: Int? = nil, now: UInt64) {
        rate = newRate
        if let newBurst { burst = max(1, newBurst) }
        emissionInterval = newRate.emissionIntervalNanos ?? 0
        tolerance = Self.product(emissionInterval, UInt64(burst - 1))
        theoreticalArrival = min(theoreticalArrival, Self.sum(now, emissionInterval))
    }

    private func conforms(now: UInt64, cost: Int) -> Bool {
        if theoreticalArrival <= now { return true }
        let extra = Self.product(emissionInterval, UInt64(max(1, cost) - 1))
        return Self.sum(theoreticalArrival, extra) <= Self.sum(now, tolerance)
    }

    private static func sum(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? .max : r
    }

    private static func product(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        return o ? .max : r
    }
}
