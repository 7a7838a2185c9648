import Testing
@testable import PeregrineIO

/// Edge cases of the hashed timer wheel, on a synthetic clock.
@Suite("TimerWheelTests")
struct TimerWheelTests {
    let ms: UInt64 = 1_000_000
    let t0: UInt64 = 1_000_000_000_000  // an arbitrary monotonic start

    /// Advances and fires through the cancel-safe API, returning the names fired.
    func fire(_ wheel: inout TimerWheel, to now: UInt64, log: Log) {
        var due: [TimerHandle] = []
        wheel.advance(to: now, due: &due)
        for h in due { if let cb = wheel.takeDue(h) { cb() } }
    }

    final class Log { var names: [String] = [] }

    @Test func firesInDeadlineOrderWithTiesInSchedulingOrder() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        _ = wheel.schedule(at: t0 + 3 * ms) { log.names.append("c") }
        _ = wheel.schedule(at: t0 + 1 * ms) { log.names.append("a") }
        _ = wheel.schedule(at: t0 + 3 * ms) { log.names.append("d") }
        _ = wheel.schedule(at: t0 + 2 * ms + 1) { log.names.append("b") }  // mid-tick deadline
        fire(&wheel, to: t0 + 10 * ms, log: log)
        #expect(log.names == ["a", "b", "c", "d"])
        #expect(wheel.liveCount == 0)
    }

    @Test func neverFiresEarly() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        _ = wheel.schedule(at: t0 + 5 * ms + 500_000) { log.names.append("x") }
        fire(&wheel, to: t0 + 5 * ms, log: log)
        #expect(log.names == [])
        fire(&wheel, to: t0 + 5 * ms + 499_999, log: log)
        #expect(log.names == [])
        fire(&wheel, to: t0 + 6 * ms, log: log)
        #expect(log.names == ["x"])
    }

    @Test func pastDeadlineFiresOnNextAdvance() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        fire(&wheel, to: t0 + 10 * ms, log: log)
        _ = wheel.schedule(at: t0) { log.names.append("late") }
        fire(&wheel, to: t0 + 10 * ms, log: log)  // same tick: not yet processed again
        fire(&wheel, to: t0 + 11 * ms, log: log)
        #expect(log.names == ["late"])
    }

    @Test func cancelledNeverFiresAndStaleHandlesAreIgnored() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        let a = wheel.schedule(at: t0 + 1 * ms) { log.names.append("a") }
        _ = wheel.schedule(at: t0 + 1 * ms) { log.names.append("b") }
        wheel.cancel(a)
        wheel.cancel(a)  // twice
        #expect(wheel.liveCount == 1)
        fire(&wheel, to: t0 + 2 * ms, log: log)
        #expect(log.names == ["b"])
        // `a`'s entry is reused by `c`: the stale handle must not cancel `c`.
        _ = wheel.schedule(at: t0 + 3 * ms) { log.names.append("c") }
        _ = wheel.schedule(at: t0 + 3 * ms) { log.names.append("d") }
        wheel.cancel(a)
        wheel.cancel(TimerHandle(id: 0xdead_beef_0000_ffff))  // garbage
        fire(&wheel, to: t0 + 4 * ms, log: log)
        #expect(log.names == ["b", "c", "d"])
        #expect(wheel.liveCount == 0)
    }

    @Test func cancelDuringBatchSuppressesLaterTimerOfSameBatch() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        var victim = TimerHandle(id: 0)
        var pendingCancel: TimerHandle?
        _ = wheel.schedule(at: t0 + 1 * ms) { log.names.append("first"); pendingCancel = victim }
        victim = wheel.schedule(at: t0 + 1 * ms) { log.names.append("victim") }
        _ = wheel.schedule(at: t0 + 1 * ms) { log.names.append("third") }
        var due: [TimerHandle] = []
        wheel.advance(to: t0 + 2 * ms, due: &due)
        #expect(due.count == 3)
        for h in due {
            if let cb = wheel.takeDue(h) { cb() }
            if let c = pendingCancel { wheel.cancel(c); pendingCancel = nil }  // as a loop's cancelTimer would
        }
        #expect(log.names == ["first", "third"])
        #expect(wheel.liveCount == 0)
        // Cancelling an already fired timer is a no-op and keeps the count sane.
        wheel.cancel(due[0])
        #expect(wheel.liveCount == 0)
        #expect(wheel.nanosecondsUntilNextTick(now: t0 + 2 * ms) == nil)
    }

    @Test func timersBeyondOneRevolutionWaitForTheirRound() {
        var wheel = TimerWheel(now: t0)
        let log = Log()
        // 4096 slots of 1 ms: 5 s and 9.5 s share slots with earlier ticks.
        _ = wheel.schedule(at: t0 + 5_000 * ms) { log.names.append("5s") }
        _ = wheel.schedule(at: t0 + 9_500 * ms) { log.names.append("9.5s") }
        _ = wheel.schedule(at: t0 + 904 * ms) { log.names.append("0.904s") }  // same slot as 5 s
        var now = t0
        while now < t0 + 4_999 * ms { now += 7 * ms; if now > t0 + 4_999 * ms { now = t0 + 4_999 * ms }; fire(&wheel, to: now, log: log) }
        #expect(log.names == ["0.904s"])
        fire(&wheel, to: t0 + 5_000 * ms, log: log)
        #expect(log.names == ["0.904s", "5s"])
        #expect(wheel.liveCount == 1)
        // A jump over more than a whole revolution still fires it exactly once.
        fire(&wheel, to: t0 + 20_000 * ms, log: log)
        #expect(log.names == ["0.904s", "5s", "9.5s"])
    }

    @Test func nextTickReportsTheWait() {
        var wheel = TimerWheel(now: t0)
        #expect(wheel.nanosecondsUntilNextTick(now: t0) == nil)
        let h = wheel.schedule(at: t0 + 3 * ms + 200) {}
        // Deadline rounds up to the next tick boundary: never late, never before the deadline.
        #expect(wheel.nanosecondsUntilNextTick(now: t0) == 4 * ms)
        wheel.cancel(h)
        #expect(wheel.nanosecondsUntilNextTick(now: t0) == nil)
        _ = wheel.schedule(at: t0 + 10_000 * ms) {}  // beyond a revolution: an early wake-up is fine
        if let wait = wheel.nanosecondsUntilNextTick(now: t0) {
            #expect(wait > 0 && wait <= 10_000 * ms)
        } else {
            Issue.record("a live timer must produce a wait")
        }
    }

    @Test func cancelledTimersLeaveTheirSlotAtOnce() {
        var wheel = TimerWheel(now: t0)
        var handles: [TimerHandle] = []
        for i in 0..<2000 { handles.append(wheel.schedule(at: t0 + UInt64(1 + i % 1000) * ms) {}) }
        let keep = wheel.schedule(at: t0 + 1500 * ms) {}
        for h in handles { wheel.cancel(h) }
        // Nothing cancelled is left to skip: the only live timer sets the wait, exactly.
        #expect(wheel.liveCount == 1)
        #expect(wheel.nanosecondsUntilNextTick(now: t0) == 1500 * ms)
        // The cancelled entries are reused before the wheel reaches their slots.
        for i in 0..<2000 { handles[i] = wheel.schedule(at: t0 + 5 * ms) {} }
        #expect(wheel.entries.count == 2001)
        for h in handles { wheel.cancel(h) }
        wheel.cancel(keep)
        #expect(wheel.nanosecondsUntilNextTick(now: t0) == nil)
        #expect(wheel.occupied.allSatisfy { $0 == 0 })
    }

    @Test func manyScheduleCancelCyclesReuseEntries() {
        var wheel = TimerWheel(now: t0)
        var fired = 0
        var now = t0
        for round in 0..<200 {
            var handles: [TimerHandle] = []
            for i in 0..<50 { handles.append(wheel.schedule(at: now + UInt64(1 + i % 5) * ms) { fired += 1 }) }
            for (i, h) in handles.enumerated() where i % 2 == 0 { wheel.cancel(h) }
            now += 10 * ms
            var due: [TimerHandle] = []
            wheel.advance(to: now, due: &due)
            for h in due { wheel.takeDue(h)?() }
            #expect(wheel.liveCount == 0, "round \(round)")
        }
        #expect(fired == 200 * 25)
    }
}
