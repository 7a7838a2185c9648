#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineAccounting
import PeregrineIO

/// A receiver that takes the envelope, answers DATA with 354 and then never
/// reads (issue 12, item 1, the client side): the delivery's body stalls in
/// its send. `data-send-timeout` must end the attempt (a `t` record saying
/// so), the connection must close although its send never completes (it
/// used to wait for that send forever, holding the queue's max-smtp-out
/// slot), and the host is backed off like any failed session: with more mail
/// queued the receiver sees no second connection within the retry interval.
/// Counts and records, not timings: the retry interval is an hour and the
/// data-termination timeout ten minutes, so only data-send-timeout can
/// produce the `t` record within the test's bound. Scenario 181: 127.P.181.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonStalledReceiverTests {
    static let bodyBytes = 8 << 20   // far more than the receiver's window and the kernel's send buffer

    /// Injects one message of about `bodyBytes` (lines of 998 characters).
    static func injectLarge(_ c: DaemonInjector, to rcpt: String, id: String) throws -> String? {
        guard try c.client.command("MAIL FROM:<big@peregrine.test>")?.code == 250 else { return "MAIL refused" }
        guard try c.client.command("RCPT TO:<\(rcpt)>")?.code == 250 else { return "RCPT refused" }
        guard try c.client.command("DATA")?.code == 354 else { return "DATA refused" }
        let line = String(repeating: "x", count: 998) + "\r\n"
        try c.client.send("X-Loadgen-Id: \(id)\r\nSubject: large\r\n\r\n")
        let chunk = String(repeating: line, count: 256)
        for _ in 0..<(bodyBytes / (line.utf8.count * 256)) { try c.client.send(chunk) }
        try c.client.send(".\r\n")
        let r = try c.client.reply()
        return r?.code == 250 ? nil : "DATA: \(String(describing: r))"
    }

    @Test(arguments: BackendKind.testable)
    func aReceiverThatStopsReadingTimesOutTheBodySendAndIsBackedOff(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 181
        let s = try DaemonEndToEndTests.Scenario("stalled-receiver", scenario, kind)
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(scenario, kind, host: 1), mode: .stopReading)
        defer { receiver.terminate() }
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain stalled.test>
                route [\(receiver.ip)]:\(receiver.port)
                max-smtp-out 1
                retry-after 1h
                data-send-timeout 2s
                smtp-data-termination-timeout 10m
            </domain>
            """), threads: 1)
        let c = try d.client()
        #expect(try Self.injectLarge(c, to: "big@stalled.test", id: "stalled-1") == nil)
        // The attempt ends with the real reason.
        let deferred = E2E.waitUntil(120, every: 0.2) { s.records.of(.transient).contains { $0.rcpt == "big@stalled.test" } }
        #expect(deferred, "no t record: connections \(receiver.connections)\n\(s.diagnostics)")
        let t = s.records.of(.transient).filter { $0.rcpt == "big@stalled.test" }
        #expect(t.count == 1 && t.allSatisfy { $0.dsnDiag.contains("timeout waiting for the message body to be sent") },
                "\(t.map(\.dsnDiag))")
        // The connection is gone although its send never completed.
        let queue = queueName("stalled.test")
        let closed = E2E.waitUntil(30, every: 0.2) { ((try? d.queues()[queue])?["connections"] as? Int) == 0 }
        #expect(closed, "the stalled connection is still open: \(String(describing: try? d.queues()[queue]))\n\(s.diagnostics)")
        // More mail for the host: backed off, not reconnected to.
        #expect(try c.send(to: ["small@stalled.test"], id: "stalled-2") == nil)
        c.quit()
        let q = try #require(try d.queues()[queue])
        #expect((q["ready"] as? Int ?? -1) + (q["delayed"] as? Int ?? -1) == 2, "\(q)")
        #expect((q["suspendedSeconds"] as? Double ?? 0) > 0, "the host is backed off: \(q)")
        #expect(receiver.connections == 1, "\(receiver.connections) connections to a receiver that stalls every session")
        #expect(s.records.finals.isEmpty, "nothing delivered or bounced: \(s.records.finals.map(\.rcpt))")
    }
}
