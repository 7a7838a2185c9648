import Testing
import PeregrineIO
import PeregrineSMTP
import PeregrineConfig
import PeregrineTestSupport
@testable import PeregrineSpool
@testable import PeregrineEngine

/// Throttling in virtual time (TEST-AUDIT missing test 7): the real delivery
/// engine over real SMTP on loopback, but with `VirtualTimeLoop`'s clock, so
/// max-msg-rate, retry-after, backoff-retry-after, `suspend=` and
/// `disable-source-ip` are checked by the exact virtual times and order of
/// what happened, never by elapsed wall time.
@Suite(.timeLimit(.minutes(10))) struct EngineVirtualTimeTests {
    static let second: UInt64 = 1_000_000_000

    /// What happened, in order: the record type (d, t, b), the virtual time, the message.
    struct Event: Equatable, CustomStringConvertible {
        var type: String, at: UInt64, message: UInt64
        var description: String { "\(type)#\(message)@\(at / EngineVirtualTimeTests.second)s" }
    }

    struct Outcome {
        var start: UInt64
        var events: [Event]
        var connectTimes: [UInt64]
        /// `until` of each disable-source-ip, and what the engine answered for the queue right then.
        var disabled: [(until: UInt64, engineSaid: UInt64?)]
        var disabledAfterRun: UInt64?
        var rcptsSeen: Int
        /// Virtual times relative to `start`, in seconds.
        func times(_ type: String) -> [UInt64] { events.filter { $0.type == type }.map { ($0.at - start) / second } }
        func messages(_ type: String) -> [UInt64] { events.filter { $0.type == type }.map(\.message) }
    }

    /// Runs `messages` one-recipient messages through a queue with `settings`
    /// against a receiver that answers the n-th RCPT with `rcptReply(n)`, with
    /// `actions` as the queue's pattern list, until nothing is left before
    /// `horizon` seconds of virtual time.
    static func run(_ kind: BackendKind, scenario: Int, messages: Int, settings: DomainSettings, horizon: UInt64,
                    actions: @escaping @Sendable (SMTPReply) -> [SMTPPatternAction] = { _ in [] },
                    scheduleAt: UInt64? = nil,
                    rcptReply: @escaping @Sendable (Int) -> String) throws -> Outcome {
        struct Visit: SpoolLoopVisitor {
            let scenario: Int, messages: Int, settings: DomainSettings, horizon: UInt64, scheduleAt: UInt64?
            let actions: @Sendable (SMTPReply) -> [SMTPPatternAction]
            let rcptReply: @Sendable (Int) -> String
            let result: ResultBox
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop: VirtualTimeLoop<L>
                do { loop = try VirtualTimeLoop<L>() } catch {
                    if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
                    throw error
                }
                let receiver = try ScriptedReceiver(
                    ip: PrivateLoopback.address(scenario, (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1),
                    rcptReply: rcptReply)
                defer { receiver.stop() }
                let world = VirtualWorld(loop: loop, receiver: receiver, settings: settings, actions: actions)
                let start = loop.now
                for i in 1...messages { world.submit(UInt64(i)) }
                // The operator's `schedule *` (retry now) at `scheduleAt` virtual seconds.
                if let at = scheduleAt {
                    _ = loop.scheduleTimer(after: at * EngineVirtualTimeTests.second) { _ = world.engine.schedule("*") }
                }
                let finished = world.drive(until: start + horizon * EngineVirtualTimeTests.second)
                #expect(finished, "\(kind): the virtual run did not settle within its real-time deadline; events: \(world.events)")
                result.outcome = Outcome(start: start, events: world.events, connectTimes: loop.connectTimes,
                                         disabled: world.disabled, disabledAfterRun: world.engine.sourceDisabledUntil(world.key),
                                         rcptsSeen: receiver.snapshot.rcpts)
            }
        }
        let box = ResultBox()
        try SpoolLoops.forBackend(kind, Visit(scenario: scenario, messages: messages, settings: settings, horizon: horizon,
                                              scheduleAt: scheduleAt, actions: actions, rcptReply: rcptReply, result: box))
        return try #require(box.outcome)
    }

    final class ResultBox { var outcome: Outcome? }

    static func settings(_ change: (inout DomainSettings) -> Void) -> DomainSettings {
        var s = DomainSettings()
        s.maxSMTPOut = 1  // one connection: the order of attempts is the queue's order
        s.useStartTLS = false
        change(&s)
        return s
    }

    // MARK: max-msg-rate

    @Test(arguments: BackendKind.testable)
    func maxMsgRateSpacesMessagesEvenly(kind: BackendKind) throws {
        // 2/min with no burst: one message every 30 virtual seconds, in queue order.
        let s = Self.settings { $0.maxMsgRate = .limited(count: 2, per: .seconds(60)) }
        let o = try Self.run(kind, scenario: 133, messages: 6, settings: s, horizon: 3600) { _ in "250 2.1.5 ok" }
        #expect(o.messages("d") == [1, 2, 3, 4, 5, 6], "\(o.events)")
        #expect(o.times("d") == [0, 30, 60, 90, 120, 150], "\(o.events)")
        #expect(o.messages("t").isEmpty && o.messages("b").isEmpty)
    }

    // MARK: retry-after

    @Test(arguments: BackendKind.testable)
    func transientFailuresFollowTheRetrySchedule(kind: BackendKind) throws {
        // 10 s, then 20 s, and the last step repeats: attempts at 0, 10, 30, 50.
        let s = Self.settings { $0.retryAfter = RetrySchedule([.seconds(10), .seconds(20)]) }
        let o = try Self.run(kind, scenario: 134, messages: 1, settings: s, horizon: 3600) { n in
            n <= 3 ? "451 4.3.0 try again later" : "250 2.1.5 ok"
        }
        #expect(o.times("t") == [0, 10, 30], "\(o.events)")
        #expect(o.times("d") == [50], "\(o.events)")
        #expect(o.rcptsSeen == 4)
    }

    @Test(arguments: BackendKind.testable)
    func expiryBouncesAtBounceAfterNotAtTheNextRetry(kind: BackendKind) throws {
        // Retries every 40 s, expiry at 100 s: attempts at 0, 40, 80, then the
        // bounce at 100 (the next retry, 120, is clamped to the expiry).
        let s = Self.settings {
            $0.retryAfter = RetrySchedule([.seconds(40)])
            $0.bounceAfter = .seconds(100)
        }
        let o = try Self.run(kind, scenario: 135, messages: 1, settings: s, horizon: 3600) { _ in "451 4.3.0 try again later" }
        #expect(o.times("t") == [0, 40, 80], "\(o.events)")
        #expect(o.times("b") == [100], "\(o.events)")
        #expect(o.rcptsSeen == 3)
    }

    // MARK: mode=backoff and backoff-retry-after

    @Test(arguments: BackendKind.testable)
    func backoffUsesTheBackoffRetryScheduleUntilBackoffToNormal(kind: BackendKind) throws {
        // The first reply puts the queue in backoff: its retry is 60 s later
        // (backoff-retry-after), not 10 s (retry-after). Backoff ends at 100 s
        // (backoff-to-normal-after); the retry due at 120 s then fails once
        // more, in normal mode: 10 s later it is delivered.
        let s = Self.settings {
            $0.retryAfter = RetrySchedule([.seconds(10)])
            $0.backoffRetryAfter = RetrySchedule([.seconds(60)])
            $0.backoffToNormalAfter = .seconds(100)
        }
        let o = try Self.run(kind, scenario: 136, messages: 1, settings: s, horizon: 3600,
                             actions: { $0.description.contains("slow down") ? [.backoff] : [] }) { n in
            switch n {
            case 1, 2: return "451 4.7.0 slow down"
            case 3: return "451 4.3.0 try again later"
            default: return "250 2.1.5 ok"
            }
        }
        #expect(o.times("t") == [0, 60, 120], "\(o.events)")
        #expect(o.times("d") == [130], "\(o.events)")
    }

    // MARK: suspend=

    @Test(arguments: BackendKind.testable)
    func suspendHoldsTheQueueForItsDuration(kind: BackendKind) throws {
        // retry-after is 10 s, but suspend=5m holds the whole queue: no
        // connection until 300 s, and then all three messages go.
        let s = Self.settings { $0.retryAfter = RetrySchedule([.seconds(10)]) }
        let o = try Self.run(kind, scenario: 137, messages: 3, settings: s, horizon: 3600,
                             actions: { $0.description.contains("TSS04") ? [.suspend(.seconds(300))] : [] }) { n in
            n == 1 ? "451 4.7.0 [TSS04] Messages from this IP temporarily deferred" : "250 2.1.5 ok"
        }
        #expect(o.times("t") == [0], "\(o.events)")
        #expect(o.messages("d").sorted() == [1, 2, 3], "\(o.events)")
        #expect(o.times("d") == [300, 300, 300], "\(o.events)")
        let between = o.connectTimes.map { ($0 - o.start) / Self.second }.filter { $0 > 0 && $0 < 300 }
        #expect(between.isEmpty, "connections during the suspension at \(between) s")
    }

    // MARK: schedule (retry now)

    @Test(arguments: BackendKind.testable)
    func scheduleRetriesABackedOffHostNow(kind: BackendKind) throws {
        // The only MX host fails the session (421, read as MX unavailable): the
        // message is deferred and the host backed off for retry-after, 600 s.
        // The operator's `schedule` at 100 s retries now: the message goes at
        // 100 s, not at 600 s, and no further deferral is written.
        let s = Self.settings {
            $0.retryAfter = RetrySchedule([.seconds(600)])
            $0.smtp421MeansMXUnavailable = true
        }
        let o = try Self.run(kind, scenario: 57, messages: 1, settings: s, horizon: 3600, scheduleAt: 100) { n in
            n == 1 ? "421 4.3.2 mx.virtual.test closing" : "250 2.1.5 ok"
        }
        #expect(o.times("t") == [0], "\(o.events)")
        #expect(o.times("d") == [100], "\(o.events)")
        #expect(o.rcptsSeen == 2)
    }

    // MARK: retry mode (every MX host failed)

    @Test(arguments: BackendKind.testable)
    func aDeadDestinationHoldsItsMailWithoutDeferringItAgain(kind: BackendKind) throws {
        // The only MX host fails three sessions in a row (421 to the first RCPT,
        // read as MX unavailable), retry-after 100 s: one connection per wave at
        // 0, 100 and 200 s. The message in each session is deferred as tried
        // (t at 0, 100, 200); the mail waiting behind it gets one t, at its first
        // wave, and is not deferred again by the later waves (one tq each).
        // At 300 s the host works and takes all three.
        let s = Self.settings {
            $0.retryAfter = RetrySchedule([.seconds(100)])
            $0.smtp421MeansMXUnavailable = true
        }
        let o = try Self.run(kind, scenario: 58, messages: 3, settings: s, horizon: 3600) { n in
            n <= 3 ? "421 4.3.2 mx.virtual.test closing" : "250 2.1.5 ok"
        }
        #expect(o.times("t") == [0, 0, 0, 100, 200], "\(o.events)")
        #expect(o.times("tq") == [0, 100, 200], "\(o.events)")
        #expect(o.times("d") == [300, 300, 300], "\(o.events)")
        #expect(o.connectTimes.map { ($0 - o.start) / Self.second } == [0, 100, 200, 300])
    }

    @Test(arguments: BackendKind.testable)
    func mailWaitingForADeadDestinationBouncesAtItsBounceAfter(kind: BackendKind) throws {
        // The host fails every session, retry-after 100 s, bounce-after 250 s:
        // both messages (the one tried and deferred, the one held behind it)
        // bounce at 250 s, not at the next wave (300 s), and no connection is
        // made for them after they expired.
        let s = Self.settings {
            $0.retryAfter = RetrySchedule([.seconds(100)])
            $0.bounceAfter = .seconds(250)
            $0.smtp421MeansMXUnavailable = true
        }
        let o = try Self.run(kind, scenario: 59, messages: 2, settings: s, horizon: 3600) { _ in
            "421 4.3.2 mx.virtual.test closing"
        }
        #expect(o.times("b") == [250, 250], "\(o.events)")
        #expect(o.messages("b").sorted() == [1, 2], "\(o.events)")
        #expect(o.connectTimes.map { ($0 - o.start) / Self.second } == [0, 100, 200])
    }

    // MARK: disable-source-ip

    @Test(arguments: BackendKind.testable)
    func disabledSourceIPExpiresAfterItsDuration(kind: BackendKind) throws {
        // No pool to move to: the queue waits out the 10 minutes, then delivers.
        let s = Self.settings { $0.retryAfter = RetrySchedule([.seconds(10)]) }
        let o = try Self.run(kind, scenario: 138, messages: 2, settings: s, horizon: 3600,
                             actions: { $0.description.contains("blocked") ? [.disableSourceIP(.seconds(600))] : [] }) { n in
            n == 1 ? "451 4.7.1 your IP is blocked for now" : "250 2.1.5 ok"
        }
        #expect(o.disabled.count == 1)
        if let d = o.disabled.first {
            #expect((d.until - o.start) / Self.second == 600)
            #expect(d.engineSaid == d.until, "the engine must report the source disabled until then")
        }
        #expect(o.times("t") == [0], "\(o.events)")
        #expect(o.times("d") == [600, 600], "\(o.events)")
        #expect(o.disabledAfterRun == nil, "expired at 600 s: no longer disabled")
        let between = o.connectTimes.map { ($0 - o.start) / Self.second }.filter { $0 > 0 && $0 < 600 }
        #expect(between.isEmpty, "connections while the source was disabled at \(between) s")
    }
}

/// The engine's surroundings for one virtual-time run: one queue
/// (example.net/v), routed to the scripted receiver, bodies from memory.
final class VirtualWorld<Inner: EventLoop>: DeliveryPolicySource, DeliveryRouter, DeliveryBodySource, DeliveryObserver {
    let loop: VirtualTimeLoop<Inner>
    let receiver: ScriptedReceiver
    let settings: DomainSettings
    let actionsFor: @Sendable (SMTPReply) -> [SMTPPatternAction]
    let key = QueueKey(domain: "example.net", vmta: "v")
    private(set) var events: [EngineVirtualTimeTests.Event] = []
    private(set) var disabled: [(until: UInt64, engineSaid: UInt64?)] = []
    private(set) lazy var engine = DeliveryEngine(loop: loop, policies: self, router: self, bodySource: self, observer: self)
    private let body = Array("From: s@example.com\r\nTo: r@example.net\r\nSubject: virtual time\r\n\r\nhello\r\n".utf8)

    init(loop: VirtualTimeLoop<Inner>, receiver: ScriptedReceiver, settings: DomainSettings,
         actions: @escaping @Sendable (SMTPReply) -> [SMTPPatternAction]) {
        self.loop = loop; self.receiver = receiver; self.settings = settings; self.actionsFor = actions
    }

    func submit(_ id: UInt64, domain: String = "example.net") {
        let m = QueuedMessage(id: MessageID(hi: 0, lo: id), sender: "s@example.com",
                              recipients: [.init(address: "r\(id)@\(domain)")], vmta: "v", jobId: nil, envId: nil,
                              receivedAtWall: 0, receivedAt: loop.now, bodySize: body.count, stream: 0)
        engine.submit(m, recipients: [0], vmta: "v")
    }

    /// Runs the loop, moving virtual time to the next timer whenever nothing
    /// is in flight, until no timer is due before `horizon`. Real time is only
    /// the deadline against hanging. Returns whether the run settled.
    func drive(until horizon: UInt64, realSeconds: UInt64 = 120) -> Bool {
        var settled = false
        let inner = loop.inner
        func poll() {
            if loop.isQuiescent(peer: { self.receiver.peer($0) }) && !loop.advance(upTo: horizon) {
                settled = true
                inner.stop()
                return
            }
            inner.scheduleTimer(after: 1_000_000) { poll() }
        }
        inner.scheduleTimer(after: realSeconds * 1_000_000_000) { if !settled { inner.stop() } }
        inner.scheduleTimer(after: 0) { poll() }
        loop.run()
        return settled
    }

    /// Hands `work` to a later loop turn through the virtual loop (counted as in flight).
    private func later(_ work: @escaping () -> Void) {
        let box = UncheckedBox(work)
        loop.execute { box.value() }
    }

    // MARK: DeliveryPolicySource

    func policy(for queue: QueueKey) -> DomainSettings { settings }
    func virtualMTA(named: String) -> VirtualMTA? { VirtualMTA(name: named, sourceAddress: nil, hostname: "sender.virtual.test") }
    func pool(ofVMTA name: String) -> (name: String, members: [String])? { nil }
    func actions(for reply: SMTPReply, queue: QueueKey) -> [SMTPPatternAction] { actionsFor(reply) }
    func bounceCategory(for reply: SMTPReply) -> String { "other" }

    // MARK: DeliveryRouter

    func hosts(for queue: QueueKey, _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void) {
        let address: SocketAddress
        do { address = try SocketAddress(ip: receiver.ip, port: receiver.port) } catch {
            later { done(.failure(.temporary("\(error)"))) }
            return
        }
        later { done(.success([RouteHost(name: "mx.virtual.test", address: address)])) }
    }

    // MARK: DeliveryBodySource

    func readBody(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                  _ done: @escaping (Result<UnsafeRawBufferPointer, IOError>) -> Void) {
        later { [body] in
            let n = min(body.count, buffer.count)
            body.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            done(.success(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n)))
        }
    }

    // MARK: DeliveryObserver

    func delivered(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo) {
        events.append(.init(type: "d", at: loop.now, message: message.id.lo))
    }
    func bounced(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, category: String?,
                 connection: DeliveryAttemptInfo?) {
        events.append(.init(type: "b", at: loop.now, message: message.id.lo))
    }
    func deferred(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo?) {
        events.append(.init(type: "t", at: loop.now, message: message.id.lo))
    }
    func queueDeferred(_ queue: DeliveryQueue, reason: String) {
        events.append(.init(type: "tq", at: loop.now, message: 0))
    }
    func messageCompleted(_ message: QueuedMessage) {}
    func sourceDisabled(_ queue: DeliveryQueue, until: UInt64, reason: String, movedTo: String?, recipientsMoved: Int) {
        disabled.append((until, engine.sourceDisabledUntil(queue.key)))
    }
}

/// Moves a loop-confined closure through `execute` (it runs on the same loop thread).
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
