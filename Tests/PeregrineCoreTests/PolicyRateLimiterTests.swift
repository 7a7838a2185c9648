import Testing
@testable import PeregrineConfig

@Suite struct PolicyRateLimiterTests {
    let second: UInt64 = 1_000_000_000

    /// `#expect` cannot call a mutating method on a captured value.
    func take(_ limiter: inout RateLimiter, now: UInt64, cost: Int = 1) -> Bool {
        limiter.tryAcquire(now: now, cost: cost)
    }

    @Test func unlimitedAlwaysAllows() {
        var limiter = RateLimiter(rate: .unlimited)
        for i in 0..<1000 { #expect(take(&limiter, now: UInt64(i))) }
        #expect(limiter.nextAllowed(now: 42) == 42)
        #expect(limiter.isUnlimited)
    }

    @Test func evenSpacingWithBurstOne() {
        var limiter = RateLimiter(rate: .limited(count: 10, per: .seconds(1)))
        let t0: UInt64 = 5 * second
        #expect(take(&limiter, now: t0))
        #expect(!take(&limiter, now: t0))
        #expect(!take(&limiter, now: t0 + 99_999_999))
        #expect(limiter.nextAllowed(now: t0) == t0 + 100_000_000)
        #expect(take(&limiter, now: t0 + 100_000_000))
        // Over a long run the count allowed matches the rate.
        var allowed = 0
        var now = t0 + 200_000_000
        while now < t0 + 200_000_000 + 10 * second {
            if limiter.tryAcquire(now: now) { allowed += 1 }
            now += 1_000_000
        }
        #expect(allowed == 100)
    }

    @Test func burstAllowsBackToBackThenPaces() {
        var limiter = RateLimiter(rate: .limited(count: 60, per: .seconds(60)), burst: 5)
        let t0: UInt64 = 100 * second
        for _ in 0..<5 { #expect(take(&limiter, now: t0)) }
        #expect(!take(&limiter, now: t0))
        #expect(limiter.nextAllowed(now: t0) == t0 + second)
        #expect(take(&limiter, now: t0 + second))
        #expect(!take(&limiter, now: t0 + second))
        // Idle long enough and the full burst is back.
        let later = t0 + 100 * second
        for _ in 0..<5 { #expect(take(&limiter, now: later)) }
        #expect(!take(&limiter, now: later))
    }

    @Test func costAboveBurstDoesNotWedge() {
        var limiter = RateLimiter(rate: .limited(count: 1, per: .seconds(1)), burst: 2)
        let t0: UInt64 = 10 * second
        #expect(take(&limiter, now: t0, cost: 5))
        #expect(!take(&limiter, now: t0 + second))
        #expect(limiter.nextAllowed(now: t0) == t0 + 4 * second)
        #expect(take(&limiter, now: t0 + 4 * second))
        // Cost 2 within a burst of 2 after an idle period.
        var other = RateLimiter(rate: .limited(count: 1, per: .seconds(1)), burst: 2)
        #expect(take(&other, now: t0, cost: 2))
        #expect(other.nextAllowed(now: t0, cost: 2) == t0 + 2 * second)
        #expect(!take(&other, now: t0 + second, cost: 2))
        #expect(other.nextAllowed(now: t0 + second, cost: 1) == t0 + second)
    }

    @Test func rateSwapForBackoffAndBack() {
        var limiter = RateLimiter(rate: .limited(count: 10, per: .seconds(1)))
        let t0: UInt64 = 50 * second
        #expect(take(&limiter, now: t0))
        limiter.setRate(.limited(count: 1, per: .seconds(60)), now: t0)
        #expect(limiter.rate == .limited(count: 1, per: .seconds(60)))
        #expect(take(&limiter, now: t0 + 100_000_000))
        #expect(!take(&limiter, now: t0 + 30 * second))
        #expect(limiter.nextAllowed(now: t0 + 30 * second) == t0 + 100_000_000 + 60 * second)
        // Back to normal: the slow debt is capped at one new interval.
        limiter.setRate(.limited(count: 10, per: .seconds(1)), burst: 3, now: t0 + 31 * second)
        #expect(limiter.burst == 3)
        #expect(limiter.nextAllowed(now: t0 + 31 * second) == t0 + 31 * second)
        #expect(take(&limiter, now: t0 + 31 * second))
        limiter.setRate(.unlimited, now: t0 + 32 * second)
        #expect(take(&limiter, now: t0 + 32 * second))
        #expect(take(&limiter, now: t0 + 32 * second))
    }

    @Test func survivesExtremeValues() {
        var limiter = RateLimiter(rate: .limited(count: 1, per: .seconds(100 * 365 * 86400)), burst: Int.max)
        #expect(take(&limiter, now: UInt64.max - 1))
        #expect(limiter.nextAllowed(now: UInt64.max - 1, cost: Int.max) >= UInt64.max - 1)
        var fast = RateLimiter(rate: .limited(count: Int.max, per: .milliseconds(1)))
        #expect(take(&fast, now: 0))
        #expect(take(&fast, now: 1))
    }
}
