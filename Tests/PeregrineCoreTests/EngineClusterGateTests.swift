import Testing
import PeregrineIO
import PeregrineConfig
import PeregrineTestSupport
@testable import PeregrineEngine

/// cluster-max-msg-rate on one throttle (ClusterMessageGate), against a
/// ClusterLimits that answers when told: a batch per round trip, asked only
/// when the tokens are spent, never twice at once, not again before the time
/// the cluster gave, and a batch not spent within its span is dropped.
@Suite(.blockingIO) struct EngineClusterGateTests {
    final class ScriptedLimits: ClusterLimits {
        var tokenCalls: [(wanted: Int, done: (Int, UInt64) -> Void)] = []
        func acquireConnections(site: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void) {}
        func releaseConnections(site: String, count: Int) {}
        func takeMessageTokens(site: String, rate: Rate, wanted: Int, _ done: @escaping (Int, UInt64) -> Void) {
            tokenCalls.append((wanted, done))
        }
    }

    @Test(arguments: BackendKind.testable)
    func tokensComeInBatchesAndAreAskedForSparingly(_ kind: BackendKind) throws { try gate(kind.loopType) }
    func gate<L: EventLoop>(_ type: L.Type) throws {
        let harness = try CoreLoopHarness(type)
        defer { harness.stop() }
        let facts: [String: Bool]? = harness.sync { loop in
            var facts: [String: Bool] = [:]
            let limits = ScriptedLimits()
            var kicks = 0
            // 10/s: a batch is one second of the rate, 10 tokens.
            let gate = ClusterMessageGate(site: "gmail.com", rate: .limited(count: 10, per: .seconds(1)), limits: limits, loop: loop) {
                kicks += 1
            }
            let t0 = loop.now
            facts["no token at first, one refill asked"] = gate.check(now: t0) != nil && limits.tokenCalls.map(\.wanted) == [10]
            facts["not asked again while in flight"] = gate.check(now: t0) != nil && limits.tokenCalls.count == 1
            let retry = t0 + 1_000_000_000
            limits.tokenCalls[0].done(10, retry)
            facts["the answer kicks the queue"] = kicks == 1
            var sent = 0
            while gate.check(now: t0) == nil && sent < 20 { gate.take(); sent += 1 }
            facts["the batch is spent, no more"] = sent == 10 && gate.available == 0
            facts["spent: waits until the cluster's time, asks nothing"] = gate.check(now: t0) == retry && limits.tokenCalls.count == 1
            facts["asks again at that time"] = gate.check(now: retry) != nil && limits.tokenCalls.count == 2
            // A grant of 0 (another node took them) kicks nothing and moves the time on.
            let later = retry + 500_000_000
            limits.tokenCalls[1].done(0, later)
            facts["a refusal does not kick"] = kicks == 1 && gate.check(now: retry) == later && limits.tokenCalls.count == 2
            _ = gate.check(now: later)
            limits.tokenCalls[2].done(4, later)
            facts["a partial batch is usable"] = gate.available == 4 && gate.check(now: loop.now) == nil
            // Held past its span (10 × 100 ms after the grant): dropped, and a new refill asked.
            facts["a stale batch is dropped"] = gate.check(now: loop.now + 2_000_000_000) != nil && gate.available == 0
                && limits.tokenCalls.count == 4
            return facts
        }
        let got = try #require(facts)
        for (fact, holds) in got.sorted(by: { $0.key < $1.key }) { #expect(holds, "\(fact)") }
        #expect(got.count == 9)
    }
}
