import Testing
import PeregrineIO
import PeregrineSMTP
import PeregrineConfig
import PeregrineTestSupport
@testable import PeregrineSpool
@testable import PeregrineEngine

/// The path suspected when the yahoo 90m tune trial did not drain
/// (results/tune-backoff-stall-2026-12-06.md; the cause was the harness):
/// an mx-rollup site held by `backoff-max-msg-rate 0` (a member's rate 0
/// holds the member, the site's throttle stays open), a config reload in the
/// middle of the hold, then backoff-to-normal-after. In virtual time, over
/// real SMTP on loopback: nothing goes during the hold, the reload neither
/// ends it nor loses its timer, and every domain of the site goes at its end.
@Suite(.timeLimit(.minutes(5))) struct EngineBackoffReloadTests {
    static let second = EngineVirtualTimeTests.second

    struct Outcome { var start: UInt64; var events: [EngineVirtualTimeTests.Event]; var connectTimes: [UInt64] }
    final class Box { var outcome: Outcome? }

    @Test(arguments: BackendKind.testable)
    func aRolledUpHoldSurvivesAReloadAndEndsOnTime(kind: BackendKind) throws {
        struct Visit: SpoolLoopVisitor {
            let box: Box
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop: VirtualTimeLoop<L>
                do { loop = try VirtualTimeLoop<L>() } catch {
                    if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
                    throw error
                }
                // The first recipient trips the rule (Yahoo's text); the receiver takes everything after it.
                let receiver = try ScriptedReceiver(
                    ip: PrivateLoopback.address(142, (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1),
                    rcptReply: { $0 == 1 ? "451 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred" : "250 2.1.5 ok" })
                defer { receiver.stop() }
                var s = DomainSettings()
                s.useStartTLS = false
                s.mxRollup = true
                s.maxSMTPOut = 1
                s.retryAfter = RetrySchedule([.seconds(10)])
                // The tripped message's retry (90 s) comes after the hold's end (60 s), so the
                // held mail going at 60 s is the hold's own timer, not the retry's.
                s.backoffRetryAfter = RetrySchedule([.seconds(90)])
                s.backoffToNormalAfter = .seconds(60)
                s.backoffMaxMsgRateIsZero = true
                let world = VirtualWorld(loop: loop, receiver: receiver, settings: s,
                                         actions: { $0.description.contains("[TSS04]") ? [.backoff] : [] })
                let start = loop.now
                // Two domains, one MX: one site. Message 1 trips the rule; 2-4 wait behind the hold.
                world.submit(1, domain: "a.example")
                for i: UInt64 in 2...4 { world.submit(i, domain: i % 2 == 0 ? "b.example" : "a.example") }
                // The reload comes 5 s into the hold, as the tune harness's SIGHUP does.
                _ = loop.scheduleTimer(after: 5_000_000_000) { world.engine.reloadPolicies() }
                let settled = world.drive(until: start + 600_000_000_000)
                #expect(settled, "\(kind): the virtual run did not settle; events: \(world.events)")
                box.outcome = Outcome(start: start, events: world.events, connectTimes: loop.connectTimes)
            }
        }
        let box = Box()
        try SpoolLoops.forBackend(kind, Visit(box: box))
        let o = try #require(box.outcome)
        func times(_ type: String) -> [UInt64] { o.events.filter { $0.type == type }.map { ($0.at - o.start) / Self.second } }
        #expect(times("t") == [0], "\(o.events)")
        // The three held at the end of the hold (60 s), the first at its retry (90 s).
        let delivered = o.events.filter { $0.type == "d" }
        #expect(delivered.map(\.message) == [2, 3, 4, 1], "\(o.events)")
        #expect(times("d") == [60, 60, 60, 90], "\(o.events)")
        let during = o.connectTimes.map { ($0 - o.start) / Self.second }.filter { $0 > 0 && $0 < 60 }
        #expect(during.isEmpty, "connections during the hold at \(during) s")
    }
}
