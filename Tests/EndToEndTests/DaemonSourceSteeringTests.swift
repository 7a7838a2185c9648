#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
@testable import PeregrineSink

/// `disable-source-ip` with the test config's pool1 (vmta1 = 127.0.0.10,
/// vmta2 = 127.0.0.11): the receiver puts a source IP in its penalty box,
/// the pattern list disables that source for the domain, and the pool's
/// other member carries the mail. Scenarios 42 and 43 (127.P.42.x, 127.P.43.x).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonSourceSteeringTests {
    typealias Scenario = DaemonEndToEndTests.Scenario
    static let boxed = "421 4.7.650 The mail server [{ip}] has been temporarily rate limited due to IP reputation. (S775)"

    /// A receiver whose penalty box (60 s, longer than any test) is tripped
    /// per source IP by `tripSinkRate` (which waits for a 421, hence the code);
    /// the daemon paces itself below its rate.
    static func start(_ s: Scenario, ip: String) throws -> (DaemonProcess, SinkProcess) {
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("pool", domains: "pool.test", mx: [ip], """
                max-msg-rate 20/s mail burst 10 penalty "\(boxed)"
                penalty-box 60s mail "\(boxed)"
            """))
        s.sink = sink
        let (_, port) = try sink.address("pool")
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, defaultVMTA: "pool1", """
            <smtp-pattern-list ipreputation>
                reply /\\(S775\\)/ disable-source-ip=10m
            </smtp-pattern-list>
            <domain pool.test>
                route [\(ip)]:\(port)
                max-smtp-out 2
                max-msg-rate 5/s
                max-rcpt-per-transaction 1
                smtp-pattern-list ipreputation
                retry-after 1s
            </domain>
            """))
        return (d, sink)
    }

    /// One recipient per message: the pool alternates its members per message.
    static func inject(_ d: DaemonProcess, _ tag: String, _ n: Int) throws {
        let c = try d.client()
        for m in 0..<n { #expect(try c.send(to: ["\(tag)\(m)@pool.test"], id: "\(tag)-\(m)") == nil) }
        c.quit()
    }

    /// vmta1's address is boxed before anything is sent: vmta1's share meets
    /// S775, its source is disabled for pool.test, and every recipient is
    /// delivered once from vmta2's address. Mail injected after that skips
    /// vmta1 (no deferral at all), and /queues names the disabled source.
    @Test(arguments: BackendKind.testable)
    func aDisabledSourceIPsMailMovesToTheOtherPoolMember(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("steer", 42, kind)
        let ip = E2E.ip(42, kind, host: 1)
        let (d, sink) = try Self.start(s, ip: ip)
        let (_, port) = try sink.address("pool")
        let trip = try tripSinkRate(ip, port, from: "127.0.0.10", pairs: 16)
        #expect(trip?.contains("S775") == true, "\(trip ?? "no refusal")")

        try Self.inject(d, "a", 10)
        #expect(s.waitForFinals(10), "\(s.diagnostics)")
        var vmta1: [String: Any] = [:]
        E2E.waitUntil(10, every: 0.1) {
            vmta1 = (try? d.queues()[queueName("pool.test", "vmta1")]) ?? [:]
            return (vmta1["disabledSource"] as? String) == "127.0.0.10"
        }
        #expect(vmta1["disabledSource"] as? String == "127.0.0.10", "\(vmta1)")
        #expect((vmta1["disabledSeconds"] as? Double ?? 0) > 0)
        #expect(d.log.contains("source IP 127.0.0.10 disabled"), "\(d.log)")

        try Self.inject(d, "b", 6)
        #expect(s.waitForFinals(16), "\(s.diagnostics)")
        let records = s.records
        let delivered = records.of(.delivered)
        #expect(delivered.count == 16 && Set(delivered.map(\.rcpt)).count == 16)
        #expect(delivered.allSatisfy { $0.dlvSourceIp == "127.0.0.11" && $0.vmta == "vmta2" },
                "\(delivered.map { "\($0.dlvSourceIp) \($0.vmta)" })")
        // vmta1 was tried (its share of the first batch met S775) and nothing after it.
        let deferred = records.of(.transient)
        #expect(!deferred.isEmpty)
        #expect(deferred.allSatisfy { $0.rcpt.hasPrefix("a") && $0.dsnDiag.contains("S775") }, "\(deferred.map(\.rcpt))")
        #expect(try sink.ipStats("pool", "127.0.0.11")["messages_accepted"] as? Int == 16)
        #expect((try sink.ipStats("pool", "127.0.0.10")["messages_accepted"] as? Int ?? 0) == 0)
    }

    /// Both members boxed: once both sources are disabled for the domain,
    /// nothing is left to move to, and the mail waits in suspended queues
    /// (the behaviour without a pool); nothing is delivered or lost.
    @Test(arguments: BackendKind.testable)
    func withEveryMemberDisabledTheQueuesWait(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("steer-all", 43, kind)
        let ip = E2E.ip(43, kind, host: 1)
        let (d, sink) = try Self.start(s, ip: ip)
        let (_, port) = try sink.address("pool")
        for source in ["127.0.0.10", "127.0.0.11"] {
            let trip = try tripSinkRate(ip, port, from: source, pairs: 16)
            #expect(trip?.contains("S775") == true, "\(source): \(trip ?? "no refusal")")
        }
        try Self.inject(d, "c", 6)
        var queues: [String: [String: Any]] = [:]
        let names = [queueName("pool.test", "vmta1"), queueName("pool.test", "vmta2")]
        let bothWaiting = E2E.waitUntil(20, every: 0.2) {
            queues = (try? d.queues()) ?? [:]
            return names.allSatisfy { (queues[$0]?["disabledSource"] as? String ?? "") != "" }
                && names.allSatisfy { (queues[$0]?["suspendedSeconds"] as? Double ?? 0) > 0 }
                && names.reduce(0) { $0 + (queues[$1]?["ready"] as? Int ?? 0) + (queues[$1]?["delayed"] as? Int ?? 0) } == 6
        }
        #expect(bothWaiting, "\(queues) \(s.diagnostics)")
        #expect(s.records.of(.delivered).isEmpty)
        #expect(s.records.finals.isEmpty)
    }
}
