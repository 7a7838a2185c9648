import Testing
import PeregrineIO
import PeregrineConfig
import PeregrineTestSupport
@testable import PeregrineEngine

/// cluster-max-msg-rate on one throttle (ClusterMessageGate), against a
/// ClusterLimits that answers when told: a batch per round trip, asked only
/// when the tokens are spent, never twice at once, not again before the time
/// the cluster gave; each token spent no earlier than its slot on the
/// cluster's timeline, and dropped when too late for it. Then three gates
/// sharing one GCRA timeline on a virtual clock: the tokens the cluster
/// spends never exceed rate × window + 1 (every token on time) or
/// rate × (window + lateness) + 1 (connections busy, tokens late).
@Suite(.blockingIO) struct EngineClusterGateTests {
    final class ScriptedLimits: ClusterLimits {
        var tokenCalls: [(wanted: Int, done: (Int, UInt64, UInt64) -> Void)] = []
        func acquireConnections(site: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void) {}
        func releaseConnections(site: String, count: Int) {}
        func takeMessageTokens(site: String, rate: Rate, wanted: Int, _ done: @escaping (Int, UInt64, UInt64) -> Void) {
            tokenCalls.append((wanted, done))
        }
    }

    @Test(arguments: BackendKind.testable)
    func tokensComeInBatchesAndAreSpentAtTheirSlots(_ kind: BackendKind) throws { try gate(kind.loopType) }
    func gate<L: EventLoop>(_ type: L.Type) throws {
        let harness = try CoreLoopHarness(type)
        defer { harness.stop() }
        let facts: [String: Bool]? = harness.sync { loop in
            var facts: [String: Bool] = [:]
            let limits = ScriptedLimits()
            var kicks = 0
            // 10/s: the timeline runs 1 % slower (101.011 ms apart), a batch
            // is one second of that, 9 tokens.
            let gate = ClusterMessageGate(site: "gmail.com", rate: .limited(count: 10, per: .seconds(1)), limits: limits) {
                kicks += 1
            }
            let ms: UInt64 = 1_000_000
            let interval = ClusterMessageGate.clusterInterval(.limited(count: 10, per: .seconds(1)))
            facts["the interval leaves 1 % of the rate unused, whole µs"] = interval == 101_011_000
            let t0: UInt64 = 1_000_000 * ms
            facts["no token at first, one refill asked"] = gate.check(now: t0) != nil && limits.tokenCalls.map(\.wanted) == [9]
            facts["not asked again while in flight"] = gate.check(now: t0) != nil && limits.tokenCalls.count == 1
            let retry = t0 + 1_000 * ms
            let slot0 = t0 + 50 * ms
            limits.tokenCalls[0].done(9, retry, slot0)
            facts["the answer kicks the queue"] = kicks == 1 && gate.available == 9
            facts["the first token waits for its slot"] = gate.check(now: t0) == slot0
            var spent: [UInt64] = []
            var now = t0
            while spent.count < 20 {
                if let next = gate.check(now: now) { now = next; continue }
                gate.take(now: now)
                spent.append(now)
                if gate.available == 0 { break }
            }
            facts["nine tokens, each at its own slot, one interval apart"] = spent == (0..<9).map { slot0 + UInt64($0) * interval }
            facts["spent: waits until the cluster's time, asks nothing"] = gate.check(now: now) == retry && limits.tokenCalls.count == 1
            facts["asks again at that time"] = gate.check(now: retry) != nil && limits.tokenCalls.count == 2
            // A grant of 0 (another node took them) kicks nothing and moves the time on.
            let later = retry + 500 * ms
            limits.tokenCalls[1].done(0, later, later)
            facts["a refusal does not kick"] = kicks == 1 && gate.check(now: retry) == later && limits.tokenCalls.count == 2
            _ = gate.check(now: later)
            limits.tokenCalls[2].done(4, later + 2_000 * ms, later)
            facts["a partial batch is usable"] = gate.available == 4 && gate.check(now: later) == nil
            // Lateness: at most 3 ms, whatever the rate (a quarter of this
            // batch's span would be 227 ms: a burst within one second).
            facts["lateness is capped at 3 ms"] = gate.lateness == 3 * ms && ClusterMessageGate.maxLateness == 3 * ms
            // One interval and 1 ms after slot 0: slot 0's token is too late
            // (dropped), slot 1's is 1 ms late, within the lateness.
            facts["a token past its lateness is dropped"] = gate.check(now: later + interval + ms) == nil && gate.available == 3
                && gate.dropped == 1
            gate.take(now: later + interval + ms)
            // A late token does not move the next: slot 2's token is due at
            // its own slot, not one interval after slot 1's late spend.
            facts["a late token leaves the next at its slot"] = gate.check(now: later + 2 * interval - 1) == later + 2 * interval
            facts["then it is due"] = gate.check(now: later + 2 * interval) == nil
            gate.take(now: later + 2 * interval)
            facts["all past: dropped, no refill before the cluster's time"] =
                gate.check(now: later + 3 * interval + 10 * ms) == later + 2_000 * ms && gate.available == 0
                && gate.dropped == 2 && limits.tokenCalls.count == 3
            facts["then a refill"] = gate.check(now: later + 2_000 * ms) != nil && limits.tokenCalls.count == 4
            return facts
        }
        let got = try #require(facts)
        for (fact, holds) in got.sorted(by: { $0.key < $1.key }) { #expect(holds, "\(fact)") }
        #expect(got.count == 16)
    }

    /// The cluster's GCRA (RedisClusterScripts.gcra) on a virtual clock, shared
    /// by several gates; each answer arrives a round trip after the call (from
    /// `rtt`, varied per call: the slots' mapping error varies from batch to
    /// batch), Redis reading its clock halfway, the slots reported from the
    /// answer's arrival (as WorkerClusterLimits does).
    final class VirtualCluster: ClusterLimits {
        var now: UInt64 = 0
        var tat: UInt64 = 0
        let rtt: () -> UInt64
        var roundTrips = 0
        /// Answers due: (time, deliver).
        var answers: [(at: UInt64, deliver: () -> Void)] = []
        init(rtt: @escaping () -> UInt64) { self.rtt = rtt }
        func acquireConnections(site: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void) {}
        func releaseConnections(site: String, count: Int) {}
        func takeMessageTokens(site: String, rate: Rate, wanted: Int, _ done: @escaping (Int, UInt64, UInt64) -> Void) {
            roundTrips += 1
            let interval = ClusterMessageGate.clusterInterval(rate)
            let rtt = self.rtt()
            let redisNow = now + rtt / 2, arrival = now + rtt
            let tolerance = interval * UInt64(wanted), minimum = UInt64((wanted + 1) / 2)
            let start = max(tat, redisNow)
            // As the script: none when the timeline is past the tolerance (another node took them).
            var granted = redisNow + tolerance > start ? (redisNow + tolerance - start) / interval : 0
            granted = min(granted, UInt64(wanted))
            if granted < minimum { granted = 0 }
            tat = start + granted * interval
            let due = tat + minimum * interval
            let wait = due > redisNow + tolerance ? due - tolerance - redisNow : 0
            answers.append((arrival, { done(Int(granted), arrival + wait, arrival + (start - redisNow)) }))
        }
    }

    /// A repeatable pseudo-random sequence (an LCG).
    final class Dice {
        var seed: UInt64
        init(_ seed: UInt64) { self.seed = seed }
        func roll(_ range: ClosedRange<UInt64>) -> UInt64 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return range.lowerBound + (seed >> 33) % (range.upperBound - range.lowerBound + 1)
        }
    }

    /// Three nodes, each with `connections` connections that take a token as
    /// soon as one is due (or wait for the time the gate names), then are
    /// busy for `busy(i)` ns. Returns the spend times (sorted), the gates and the cluster.
    /// `timerLate(node)`: how late a node's loop fires the timers due at one
    /// time (a loaded machine); connections waiting for the same time on one
    /// node wake together, equally late.
    static func simulate(messages: Int, connections: Int, rtt: @escaping () -> UInt64 = { 200_000 },
                         timerLate: ((Int) -> UInt64)? = nil, busy: @escaping (Int) -> UInt64)
        -> (times: [UInt64], gates: [ClusterMessageGate], cluster: VirtualCluster) {
        let cluster = VirtualCluster(rtt: rtt)
        var wake: [[UInt64]] = Array(repeating: Array(repeating: 0, count: connections), count: 3)
        var gates: [ClusterMessageGate] = []
        for node in 0..<3 {
            gates.append(ClusterMessageGate(site: "gmail.com", rate: .limited(count: 1500, per: .seconds(1)), limits: cluster) {
                // The answer kicks the queue: every waiting connection looks again now.
                for c in 0..<connections where wake[node][c] > cluster.now { wake[node][c] = cluster.now }
            })
        }
        var times: [UInt64] = []
        // Per node: the last due time a timer was set for, and its lateness.
        var lastDue: [(due: UInt64, late: UInt64)] = Array(repeating: (0, 0), count: 3)
        var step = 0
        while times.count < messages && step < 10_000_000 {
            step += 1
            // The next event: an answer arriving, or a connection waking.
            var next = UInt64.max, who: (Int, Int)? = nil
            for n in 0..<3 { for c in 0..<connections where wake[n][c] < next { next = wake[n][c]; who = (n, c) } }
            if let a = cluster.answers.indices.min(by: { cluster.answers[$0].at < cluster.answers[$1].at }),
               cluster.answers[a].at <= next {
                cluster.now = cluster.answers[a].at
                cluster.answers.remove(at: a).deliver()
                continue
            }
            guard let (n, c) = who else { break }
            cluster.now = next
            if let until = gates[n].check(now: next) {
                let due = max(until, next + 1)
                if let timerLate, lastDue[n].due != due { lastDue[n] = (due, timerLate(n)) }
                wake[n][c] = due + (timerLate == nil ? 0 : lastDue[n].late)
            } else {
                gates[n].take(now: next)
                times.append(next)
                wake[n][c] = next + busy(times.count)
            }
        }
        return (times.sorted(), gates, cluster)
    }

    /// The most messages in any window [t, t + window] (closed) of the sorted times.
    static func busiest(_ times: [UInt64], window: UInt64) -> Int {
        var best = 0, lo = 0
        for hi in times.indices {
            while times[hi] - times[lo] > window { lo += 1 }
            best = max(best, hi - lo + 1)
        }
        return best
    }

    /// The most messages in any window of the spend times, over the bound
    /// ⌊(window + slack) ÷ interval⌋ + 1 (≤ 0: the bound holds).
    static func worstExcess(_ times: [UInt64], interval: UInt64, slack: UInt64) -> Int {
        var worst = Int.min
        for j in times.indices {
            for i in 0...j {   // every window that starts and ends on a message
                let allowed = Int((times[j] - times[i] + slack) / interval) + 1
                worst = max(worst, (j - i + 1) - allowed)
            }
        }
        return worst
    }

    /// The bound: the receiver never sees more than the rate. At
    /// 1,500/s, three nodes, two seconds of messages: every second of the
    /// spends, and of the receiver's stamps (each message delayed 0.2-5.2 ms
    /// after its spend, varying), holds at most 1,500, with the nodes' answers
    /// arriving 0.2-2 ms after the call (the slots' mapping error varies) and
    /// connections too busy to spend every token at its slot. The cluster
    /// still runs close to the rate (the headroom is 1 %).
    @Test func threeNodesSharingTheTimelineNeverPassTheRate() throws {
        let rate = 1500
        let second: UInt64 = 1_000_000_000
        let interval = ClusterMessageGate.clusterInterval(.limited(count: rate, per: .seconds(1)))
        #expect(interval == 674_000)   // 1 ÷ (0.99 × 1,500) = 673.4 µs, rounded up
        // Eager: 8 connections a node, each busy 1 µs: a token is always
        // awaited, every one is spent at its slot exactly.
        let eager = Self.simulate(messages: 3_000, connections: 8) { _ in 1_000 }
        #expect(eager.times.count == 3_000)
        #expect(Self.worstExcess(eager.times, interval: interval, slack: 0) <= 0)
        #expect(eager.gates.allSatisfy { $0.dropped == 0 })
        let eagerBusiest = Self.busiest(eager.times, window: second)
        #expect(eagerBusiest <= rate)
        #expect(eagerBusiest >= rate * 98 / 100, "the nodes run at the rate less the headroom, not far below it")
        // Round trips: a batch (20) each, or a little more (a grant of half a batch).
        #expect(eager.cluster.roundTrips <= 3_000 / 10 + 3)
        // Busy: 2 connections a node, each busy 0.5-4.5 ms: the nodes cannot
        // keep up with their slots, tokens come due while every connection is
        // busy and are spent late (up to the lateness) or dropped. The
        // answers' round trips vary (0.2-2 ms).
        let dice = Dice(0x9E37_79B9_7F4A_7C15)
        let busy = Self.simulate(messages: 3_000, connections: 2, rtt: { dice.roll(200_000...2_000_000) }) { _ in
            dice.roll(500_000...4_500_000)
        }
        let lateness = busy.gates[0].lateness
        #expect(lateness == 3_000_000)
        #expect(busy.times.count == 3_000)
        #expect(busy.gates.reduce(0) { $0 + $1.dropped } > 0, "the busy run is meant to drop late tokens")
        // Late tokens are late: the strict spacing does not hold, the bound
        // with the lateness and the mapping error (≤ 1 ms here) does.
        #expect(Self.worstExcess(busy.times, interval: interval, slack: 0) > 0)
        #expect(Self.worstExcess(busy.times, interval: interval, slack: lateness + 1_000_000) <= 0)
        #expect(Self.busiest(busy.times, window: second) <= rate)
        // At the receiver: each message 0.2-5.2 ms after its spend (E = 3 ms
        // lateness + 1 ms mapping + 5 ms jitter = 9 ms, within the 10.1 ms budget).
        for run in [eager.times, busy.times] {
            let stamps = run.map { $0 + dice.roll(200_000...5_200_000) }.sorted()
            #expect(Self.busiest(stamps, window: second) <= rate)
        }
        // The budget is what it says, no more: 20 ms of jitter (twice the
        // budget) on the messages spent in the 20 ms before a second of the
        // eager run lands them inside it, past the rate.
        let anchor = eager.times[0] + second / 2
        #expect(eager.times.filter { $0 + 20_000_000 >= anchor && $0 <= anchor + second }.count > rate)
    }
    /// Timers firing late (a loaded machine: each node's loop wakes 0-3 ms
    /// after the time asked, at random) must not cost tokens: a token is
    /// dropped only past its own slot's lateness (3 ms), so a wake-up at most
    /// 3 ms late still spends it. When a late token pushed the next one an
    /// interval after it, the lateness added up from token to token and most
    /// of them were dropped (session 16's bench: 58 % of the tokens, 476/s of
    /// 1,500/s). The bound holds either way; the dropped fraction is printed.
    @Test func lateTimersDropNoTokens() throws {
        let rate = 1500
        let second: UInt64 = 1_000_000_000
        let interval = ClusterMessageGate.clusterInterval(.limited(count: rate, per: .seconds(1)))
        let dice = Dice(0x2545_F491_4F6C_DD1D)
        // 8 connections a node (the bench's 24 in all), each busy 0.5-4.5 ms
        // a message, answers 0.2-2 ms after the call, timers 0-3 ms late.
        let run = Self.simulate(messages: 3_000, connections: 8, rtt: { dice.roll(200_000...2_000_000) },
                                timerLate: { _ in dice.roll(0...3_000_000) }) { _ in dice.roll(500_000...4_500_000) }
        #expect(run.times.count == 3_000)
        let lateness = run.gates[0].lateness
        let dropped = run.gates.reduce(0) { $0 + $1.dropped }
        let fraction = Double(dropped) / Double(dropped + run.times.count)
        print("lateTimersDropNoTokens: \(dropped) of \(dropped + run.times.count) tokens dropped "
              + "(\((fraction * 1000).rounded() / 10) %), busiest second \(Self.busiest(run.times, window: second)), "
              + "\(run.cluster.roundTrips) rate round trips")
        // The bound: every spend within its slot's lateness, every window
        // within ⌊(W + lateness + 1 ms mapping) ÷ interval⌋ + 1, every second
        // within the rate, at the nodes and at a receiver 0.2-5.2 ms later.
        #expect(Self.worstExcess(run.times, interval: interval, slack: lateness + 1_000_000) <= 0)
        #expect(Self.busiest(run.times, window: second) <= rate)
        let stamps = run.times.map { $0 + dice.roll(200_000...5_200_000) }.sorted()
        #expect(Self.busiest(stamps, window: second) <= rate)
        // Wake-ups within the lateness lose no token (the push rule lost most).
        #expect(dropped == 0, "tokens dropped with every timer within the lateness")
        #expect(Self.busiest(run.times, window: second) >= rate * 98 / 100, "the nodes keep to the rate less the headroom")
    }
}
