import Testing
@testable import PeregrineConfig
@testable import PeregrineEngine

/// The engine's message pacer (`max-msg-rate`) on a virtual clock, driven the
/// way a delivery connection drives it: ask, and when told to wait, sleep on a
/// timer of the loops' 1 ms wheel (never early, rounded up to the next tick)
/// that also wakes a little late. Issue 19: `tune` runs delivered 85–92% of
/// `max-msg-rate`, because every late wake-up pushed the whole schedule back.
@Suite struct DeliveryPacerTests {
    static let millisecond: UInt64 = 1_000_000
    static let second: UInt64 = 1_000_000_000

    /// Messages `acquire` lets out in `window` for a caller that wakes on the
    /// 1 ms wheel plus 0.1–1.9 ms of lateness (cycled, so it is repeatable).
    /// `acquire` answers nil (go) or when to ask again.
    static func delivered(window: UInt64, _ acquire: (UInt64) -> UInt64?) -> Int {
        let start: UInt64 = 1000 * second + 123_457
        var now = start, count = 0, wake = 0
        while now < start + window {
            if let until = acquire(now) {
                let tick = (until + millisecond - 1) / millisecond * millisecond
                wake += 1
                now = max(tick, now + millisecond) + UInt64(1 + wake % 19) * millisecond / 10
            } else {
                count += 1
            }
        }
        return count
    }

    /// The engine's pacer: a domain's `max-msg-rate` in its DeliveryThrottle.
    static func delivered(rate: Rate, window: UInt64) -> Int {
        var policy = DomainSettings()
        policy.maxMsgRate = rate
        let throttle = DeliveryThrottle(policy: policy)
        return delivered(window: window) { throttle.acquireMessage(now: $0) }
    }

    /// 100/s (3600/h at tune's time-scale 0.01), 50/s (1800/h) and an
    /// interval that is no whole number of ticks: over a window the count is
    /// the rate's, give or take the event at either end.
    @Test(arguments: [(100, 1), (50, 1), (7, 1), (3600, 3600)])
    func deliveredCountReachesTheConfiguredRate(count: Int, perSeconds: Int) {
        let rate = Rate.limited(count: count, per: .seconds(perSeconds))
        let window = 20 * Self.second
        let expected = count * 20 / perSeconds
        let n = Self.delivered(rate: rate, window: window)
        #expect(n >= expected - 1 && n <= expected + 1, "\(n) in 20 s at \(count)/\(perSeconds)s, want \(expected)")
    }

    /// `#expect` cannot call a mutating method on a captured value.
    static func take(_ limiter: inout RateLimiter, now: UInt64) -> Bool { limiter.tryAcquire(now: now) }

    /// What the pacer did before it kept its schedule (plain GCRA, as policers
    /// still use): the same caller gets 10% less than 100/s.
    @Test func aPolicerDrivenTheSameWayFallsShort() {
        var policer = RateLimiter(rate: .limited(count: 100, per: .seconds(1)))
        let n = Self.delivered(window: 20 * Self.second) { now in
            policer.tryAcquire(now: now) ? nil : policer.nextAllowed(now: now)
        }
        #expect(n < 2000 * 95 / 100, "\(n) in 20 s at 100/s")
    }

    /// Keeping the schedule lends at most one slot, and only to a caller late
    /// by a hiccup: one back after an idle spell starts afresh (no saved-up
    /// burst), and one that asks early is refused.
    @Test func aPacerKeepsItsSlotButSavesNothingUp() {
        let t = 100 * Self.millisecond
        var pacer = RateLimiter(rate: .limited(count: 10, per: .seconds(1)), keepsSchedule: true)
        let t0: UInt64 = 7 * Self.second
        #expect(Self.take(&pacer, now: t0))
        #expect(!Self.take(&pacer, now: t0 + t - 1))
        // 3 ms late for its slot: the next slot is still t0 + 2t.
        #expect(Self.take(&pacer, now: t0 + t + 3 * Self.millisecond))
        #expect(pacer.nextAllowed(now: t0 + t + 3 * Self.millisecond) == t0 + 2 * t)
        #expect(!Self.take(&pacer, now: t0 + 2 * t - 1))
        #expect(Self.take(&pacer, now: t0 + 2 * t))
        // Idle for 10 intervals: one event now, the next a whole interval later.
        let later = t0 + 12 * t
        #expect(Self.take(&pacer, now: later))
        #expect(!Self.take(&pacer, now: later + t - 1))
        #expect(Self.take(&pacer, now: later + t))
        // A slow pacer asked long after its slot was idle: no second message close behind.
        let hour: UInt64 = 3600 * Self.second
        var slow = RateLimiter(rate: .limited(count: 1, per: .seconds(3600)), keepsSchedule: true)
        #expect(Self.take(&slow, now: t0))
        #expect(Self.take(&slow, now: t0 + hour + 59 * 60 * Self.second))
        #expect(!Self.take(&slow, now: t0 + 2 * hour + 30 * 60 * Self.second))
        #expect(slow.nextAllowed(now: t0 + 2 * hour) == t0 + 2 * hour + 59 * 60 * Self.second)
        // A policer (the default) charges from the request, as before.
        var policer = RateLimiter(rate: .limited(count: 10, per: .seconds(1)))
        #expect(Self.take(&policer, now: t0))
        #expect(Self.take(&policer, now: t0 + t + 3 * Self.millisecond))
        #expect(policer.nextAllowed(now: t0 + t + 3 * Self.millisecond) == t0 + 2 * t + 3 * Self.millisecond)
    }
}
