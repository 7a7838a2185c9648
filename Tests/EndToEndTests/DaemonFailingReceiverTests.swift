#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineAccounting
import PeregrineIO

/// A receiver that fails every session (issue 12, item 2) is backed off like
/// a deferral, never reconnected to in a loop: over a test much shorter than
/// the retry interval it sees at most max-smtp-out connections, the messages
/// waiting for it get `t` records with the real reason, and a healthy second
/// MX of the same domain still gets the mail. Counts, not timings: retry-after
/// is an hour, so any second wave of connections is a storm.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonFailingReceiverTests {
    static let maxSMTPOut = 2

    /// What the `t` records must say for each way of failing.
    static func expectedReason(_ mode: FailingReceiver.Mode) -> String {
        switch mode {
        case .greetAndClose: "connection closed by peer while waiting for the EHLO reply"
        case .garbage: "protocol error: malformed reply line"
        case .overlongLine: "protocol error: reply line longer than"
        case .badCode: "unexpected greeting: 354 go ahead"
        case .silent: "timeout waiting for the greeting"
        case .refuseMail: "421 4.3.2 try again later"
        case .acceptOne: "421 4.7.0 too many messages"
        case .stopReading: "timeout waiting for the message body to be sent"
        case .greet554: "unexpected greeting: 554 5.7.1 no service for you"
        case .closeInBody: "connection closed"   // not in `failing`: DaemonFileBodyTests
        }
    }

    @Test(arguments: BackendKind.testable, FailingReceiver.Mode.failing)
    func aFailingReceiverSeesAtMostMaxSMTPOutConnectionsPerRetryInterval(_ kind: BackendKind, _ mode: FailingReceiver.Mode) throws {
        try kind.requireAvailable()
        let scenario = 80 + FailingReceiver.Mode.allCases.firstIndex(of: mode)!
        let s = try DaemonEndToEndTests.Scenario("failing-\(mode)", scenario, kind)
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(scenario, kind, host: 1), mode: mode)
        defer { receiver.terminate() }
        // A healthy destination on the same loop (threads 1): once its mail is
        // delivered, the loop has long since handled the failed sessions.
        let fenceIP = E2E.ip(scenario, kind, host: 2)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("fence", domains: "fence.test", mx: [fenceIP]))
        s.sink = sink
        let (_, fencePort) = try sink.address("fence")
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain failing.test>
                route [\(receiver.ip)]:\(receiver.port)
                max-smtp-out \(Self.maxSMTPOut)
                max-rcpt-per-transaction 1
                retry-after 1h
                smtp-greeting-timeout 1s
            </domain>
            <domain fence.test>
                route [\(fenceIP)]:\(fencePort)
            </domain>
            """), threads: 1)
        let c = try d.client()
        // Five recipients, one transaction each: more ready work than connections.
        let rcpts = (0..<5).map { "r\($0)@failing.test" }
        #expect(try c.send(to: rcpts, id: "failing-\(mode)") == nil)
        // Every waiting recipient is deferred once, with the real reason.
        let deferred = E2E.waitUntil(30, every: 0.1) { Set(s.records.of(.transient).map(\.rcpt)).isSuperset(of: rcpts) }
        let afterDeferral = receiver.connections
        #expect(deferred, "connections so far: \(afterDeferral)\n\(s.diagnostics)")
        let reason = Self.expectedReason(mode)
        let transient = s.records.of(.transient)
        #expect(transient.allSatisfy { $0.dsnDiag.contains(reason) }, "\(transient.map(\.dsnDiag))")
        #expect(transient.count == rcpts.count, "\(transient.map { "\($0.rcpt) \($0.dsnDiag)" })")
        #expect(s.records.finals.isEmpty)

        // More mail for the same queue does not reopen it before its retry time.
        #expect(try c.send(to: ["late@failing.test"], id: "failing-late") == nil)
        #expect(try c.send(to: ["f@fence.test"], id: "fence") == nil)
        c.quit()
        #expect(E2E.waitUntil(30) { s.records.of(.delivered).contains { $0.rcpt == "f@fence.test" } }, "\(s.diagnostics)")
        let total = receiver.connections
        #expect(total >= 1 && total <= Self.maxSMTPOut,
                "\(total) connections (\(afterDeferral) when the first t records appeared) for max-smtp-out \(Self.maxSMTPOut)")
        let queue = try #require(try d.queues()[queueName("failing.test")])
        // All six recipients still queued, the queue waiting for its retry time.
        #expect((queue["ready"] as? Int ?? -1) + (queue["delayed"] as? Int ?? -1) == rcpts.count + 1, "\(queue)")
        #expect((queue["suspendedSeconds"] as? Double ?? 0) > 0, "\(queue)")
    }

    /// The backoff grows along the retry-after list: with `1s,1h` the
    /// receiver gets a second wave after a second, then nothing for an hour;
    /// the first wave defers every waiting recipient (a `t` each), later
    /// waves leave the waiting mail alone (a `tq` each).
    @Test(arguments: BackendKind.testable)
    func theBackoffGrowsAlongTheRetryList(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 186
        let s = try DaemonEndToEndTests.Scenario("failing-growth", scenario, kind)
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(scenario, kind, host: 1), mode: .greetAndClose)
        defer { receiver.terminate() }
        let fenceIP = E2E.ip(scenario, kind, host: 2)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("fence", domains: "fence.test", mx: [fenceIP]))
        s.sink = sink
        let (_, fencePort) = try sink.address("fence")
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain failing.test>
                route [\(receiver.ip)]:\(receiver.port)
                max-smtp-out \(Self.maxSMTPOut)
                max-rcpt-per-transaction 1
                retry-after 1s,1h
            </domain>
            <domain fence.test>
                route [\(fenceIP)]:\(fencePort)
            </domain>
            """), threads: 1)
        let c = try d.client()
        let rcpts = (0..<5).map { "g\($0)@failing.test" }
        #expect(try c.send(to: rcpts, id: "growth") == nil)
        // Two waves: the second a second after the first; after it the queue
        // waits an hour (the list's second step).
        let waitingAnHour = E2E.waitUntil(60, every: 0.1) {
            let queue = (try? d.queues())?[queueName("failing.test")]
            return receiver.connections > Self.maxSMTPOut && (queue?["suspendedSeconds"] as? Double ?? 0) > 60
        }
        #expect(waitingAnHour, "connections: \(receiver.connections)\n\(s.diagnostics)")
        #expect(try c.send(to: ["f@fence.test"], id: "fence") == nil)
        c.quit()
        #expect(E2E.waitUntil(30) { s.records.of(.delivered).contains { $0.rcpt == "f@fence.test" } }, "\(s.diagnostics)")
        let total = receiver.connections
        #expect(total > Self.maxSMTPOut && total <= 2 * Self.maxSMTPOut, "\(total) connections over two retry intervals")
        // Each recipient was deferred once, by the first wave; the second found
        // the queue's mail already waiting and wrote only its queue record.
        #expect(s.records.of(.transient).count == rcpts.count, "\(s.records.of(.transient).map { "\($0.rcpt) \($0.dsnDiag)" })")
        #expect(Set(s.records.of(.transient).map(\.rcpt)) == Set(rcpts))
        #expect(s.records.of(.transientQueue).count >= 2)
    }

    /// The primary MX greets and closes every session; the secondary is
    /// healthy. The primary is backed off on its own (at most max-smtp-out
    /// connections), everything goes to the secondary, and nothing is
    /// deferred: the queue always had a usable host.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"), arguments: BackendKind.testable)
    func aHealthySecondaryMXGetsTheMailWhileThePrimaryFails(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 187
        let s = try DaemonEndToEndTests.Scenario("failing-mx", scenario, kind)
        let primary = E2E.ip(scenario, kind, host: 1), secondary = E2E.ip(scenario, kind, host: 2)
        // MX hosts are reached on port 25: the failing receiver on the
        // primary's, a sink on the secondary's; a DNS sink names both.
        let receiver = try FailingReceiver(s.dir, ip: primary, port: 25, mode: .greetAndClose)
        defer { receiver.terminate() }
        let dnsSink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("zone", domains: "mx.test", mx: [primary, secondary]),
                                    dns: true, tag: "dns")
        defer { dnsSink.terminate() }
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("secondary", domains: "other.test", mx: [secondary]), port: 25)
        s.sink = sink
        let dnsPort = try #require(dnsSink.dnsPort)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            <domain mx.test>
                max-smtp-out \(DaemonFailingReceiverTests.maxSMTPOut)
                max-rcpt-per-transaction 1
                retry-after 1h
            </domain>
            """))
        let c = try d.client()
        for m in 0..<4 { #expect(try c.send(to: ["a\(m)@mx.test", "b\(m)@mx.test"], id: "mx-\(m)") == nil) }
        c.quit()
        #expect(s.waitForFinals(8), "primary connections: \(receiver.connections)\n\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        #expect(delivered.count == 8)
        #expect(delivered.allSatisfy { $0.dlvDestinationIp == secondary }, "\(delivered.map(\.dlvDestinationIp))")
        #expect(s.records.of(.transient).isEmpty, "\(s.records.of(.transient).map(\.dsnDiag))")
        // The queue's accounting names the failed host and why (tq, as PowerMTA's per failed attempt).
        let tq = s.records.of(.transientQueue)
        #expect(tq.contains { $0.dsnDiag.contains(primary) && $0.dsnDiag.contains("connection closed by peer") }, "\(tq.map(\.dsnDiag))")
        let total = receiver.connections
        #expect(total >= 1 && total <= DaemonFailingReceiverTests.maxSMTPOut, "primary got \(total) connections")
    }

    /// `smtp-421-means-mx-unavailable yes` (PowerMTA's): a 421 on a working
    /// connection means this MX is unavailable, so the next MX gets the mail.
    /// The primary accepts one message per connection and then says 421.
    /// Without the directive every message would reconnect to the primary.
    @Test(.enabled(if: E2E.mayBindPort25, "binding port 25 needs root or net.ipv4.ip_unprivileged_port_start <= 25"), arguments: BackendKind.testable)
    func smtp421MeansMXUnavailableMovesToTheNextMX(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 188
        let s = try DaemonEndToEndTests.Scenario("mx-421", scenario, kind)
        let primary = E2E.ip(scenario, kind, host: 1), secondary = E2E.ip(scenario, kind, host: 2)
        let receiver = try FailingReceiver(s.dir, ip: primary, port: 25, mode: .acceptOne)
        defer { receiver.terminate() }
        let dnsSink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("zone", domains: "mx421.test", mx: [primary, secondary]),
                                    dns: true, tag: "dns")
        defer { dnsSink.terminate() }
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("secondary", domains: "other.test", mx: [secondary]), port: 25)
        s.sink = sink
        let dnsPort = try #require(dnsSink.dnsPort)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, dns: "\(s.listenIP):\(dnsPort)", """
            <domain mx421.test>
                max-smtp-out 1
                max-rcpt-per-transaction 1
                retry-after 1h
                smtp-421-means-mx-unavailable yes
            </domain>
            """))
        let c = try d.client()
        let rcpts = (0..<6).map { "m\($0)@mx421.test" }
        #expect(try c.send(to: rcpts, id: "mx421") == nil)
        c.quit()
        // One delivered by the primary, the one its 421 answered is deferred,
        // the other four go to the secondary.
        #expect(E2E.waitUntil(40) { s.records.finals.count >= 5 && s.records.of(.transient).count >= 1 },
                "primary connections: \(receiver.connections)\n\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        #expect(delivered.filter { $0.dlvDestinationIp == primary }.count == 1, "\(delivered.map(\.dlvDestinationIp))")
        #expect(delivered.filter { $0.dlvDestinationIp == secondary }.count == 4, "\(delivered.map(\.dlvDestinationIp))")
        #expect(s.records.of(.transient).map(\.dsnDiag).allSatisfy { $0.contains("421 4.7.0 too many messages") })
        #expect(receiver.connections == 1)
    }
}
