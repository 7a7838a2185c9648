#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// Shutdown deadline and signals (issue 12, item 8; DaemonShutdownTests covers
/// SIGTERM under traffic), per backend: SIGTERM is bounded by
/// shutdown-timeout even while a delivery waits on a receiver that says
/// nothing (the greeting timeout is the default 5 minutes), a second signal
/// stops at once, the message in flight is still spooled for the next start,
/// and every injection client whose message was committed gets its 250.
/// Outer bounds are generous deadlines against hanging, not timing claims.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonShutdownDeadlineTests {
    /// Waits (bounded) for the daemon process to exit.
    static func waitForExit(_ d: DaemonProcess, _ seconds: Double) -> Bool {
        E2E.waitUntil(seconds, every: 0.05) { !d.process.isRunning }
    }

    /// A daemon delivering to a silent receiver, one message in flight.
    func silentDelivery(_ s: DaemonEndToEndTests.Scenario, _ scenario: Int, shutdownTimeout: String)
        throws -> (DaemonProcess, FailingReceiver, String) {
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(scenario, s.kind, host: 1), mode: .silent)
        let config = daemonConfig(s.dir, listen: s.listenIP, """
            shutdown-timeout \(shutdownTimeout)
            <domain silent.test>
                route [\(receiver.ip)]:\(receiver.port)
            </domain>
            """)
        let d = try s.startDaemon(config)
        let c = try d.client()
        #expect(try c.send(to: ["s@silent.test"], id: "silent") == nil)
        c.quit()
        // The delivery is under way: connected, waiting for a greeting that never comes.
        #expect(E2E.waitUntil(20) { receiver.connections >= 1 }, "\(s.diagnostics)")
        return (d, receiver, config)
    }

    /// The message abandoned at shutdown is spooled: the next start re-queues it.
    func expectRequeued(_ s: DaemonEndToEndTests.Scenario, config: String, receiver: FailingReceiver) throws {
        #expect(s.records.finals.isEmpty)
        let again = try s.startDaemon(config)
        #expect(E2E.waitUntil(20) { again.log.contains("re-queued 1 message(s)") }, "\(again.log)")
        again.terminate()
    }

    @Test(arguments: BackendKind.testable)
    func sigtermIsBoundedByShutdownTimeout(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("shutdown-deadline", 86, kind)
        let (d, receiver, config) = try silentDelivery(s, 86, shutdownTimeout: "2s")
        defer { receiver.terminate() }
        kill(d.process.processIdentifier, SIGTERM)
        // Far below the 5-minute greeting timeout the delivery would otherwise wait out.
        #expect(Self.waitForExit(d, 60), "still running 60 s after SIGTERM:\n\(d.log)")
        d.terminate()
        #expect(d.log.contains("shutdown-timeout (2s) reached"), "\(d.log)")
        #expect(d.log.contains("peregrine: stopped"), "\(d.log)")
        try expectRequeued(s, config: config, receiver: receiver)
    }

    @Test(arguments: BackendKind.testable)
    func aSecondSignalStopsAtOnce(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("shutdown-twice", 87, kind)
        // A deadline no test waits for: only the second signal can end it.
        let (d, receiver, config) = try silentDelivery(s, 87, shutdownTimeout: "1h")
        defer { receiver.terminate() }
        kill(d.process.processIdentifier, SIGTERM)
        #expect(E2E.waitUntil(20) { d.log.contains("shutting down (SIGTERM)") }, "\(d.log)")
        kill(d.process.processIdentifier, SIGINT)
        #expect(Self.waitForExit(d, 60), "still running 60 s after the second signal:\n\(d.log)")
        d.terminate()
        #expect(d.log.contains("SIGINT again: abandoning deliveries in flight"), "\(d.log)")
        try expectRequeued(s, config: config, receiver: receiver)
    }

    /// Clients keep injecting over several connections while SIGTERM comes:
    /// every message the daemon committed (it is in the spool and has an `r`
    /// record) was answered 250, and no client saw the connection end after
    /// its final "." without a reply.
    @Test(arguments: BackendKind.testable)
    func committedMessagesGetTheir250UnderSigterm(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let s = try DaemonEndToEndTests.Scenario("shutdown-load", 88, kind)
        // Nothing listens on the route: every message stays spooled (the queue is deferred).
        let config = daemonConfig(s.dir, listen: s.listenIP, """
            shutdown-timeout 5s
            <domain load.test>
                route [\(E2E.ip(88, kind, host: 1))]:25
                retry-after 1h
            </domain>
            """)
        let d = try s.startDaemon(config)
        let script = try s.dir.write("inject.py", Self.injector)
        let summary = s.dir.file("inject.json")
        let load = Process()
        load.executableURL = URL(fileURLWithPath: python)
        load.arguments = [script, d.listenIP, "\(d.listenPort)", "8", summary]
        load.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        load.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try load.run()
        defer { stopProcess(load, grace: 5) }
        // Under way: a good number of messages committed (r records are flushed periodically).
        #expect(E2E.waitUntil(60) { s.records.of(.received).count >= 40 }, "\(s.diagnostics)")
        kill(d.process.processIdentifier, SIGTERM)
        #expect(Self.waitForExit(d, 60), "\(d.log)")
        d.terminate()
        // The clients stop once the daemon is gone.
        #expect(E2E.waitUntil(60) { !load.isRunning })
        let result = try E2E.json(try Data(contentsOf: URL(fileURLWithPath: summary)))
        let accepted = result["accepted"] as? Int ?? -1
        // (A client may still see EOF after its "." when the daemon closed
        // before reading it: nothing was committed then, and its resend is no duplicate.)
        #expect(accepted >= 40, "\(result)")
        // Every commit is answered: as many r records (one recipient per message) as 250s.
        #expect(s.records.of(.received).count == accepted, "\(result) vs \(s.records.of(.received).count) r records")
        // And the spool holds exactly those messages.
        let again = try s.startDaemon(config)
        // Each loop logs what it re-queued from its spool stream.
        func requeued() -> Int {
            again.log.split(separator: "\n").filter { $0.contains("re-queued") }.compactMap { line -> Int? in
                guard let r = line.range(of: "re-queued ") else { return nil }
                return Int(line[r.upperBound...].prefix { $0.isNumber })
            }.reduce(0, +)
        }
        E2E.waitUntil(30) { requeued() >= accepted }
        #expect(requeued() == accepted, "re-queued \(requeued()), accepted \(accepted)\n\(again.log)")
        again.terminate()
    }

    /// Python smtplib clients, one connection each, sending messages in a
    /// loop until the daemon goes away; counts 250s and the connections that
    /// ended after the final "." without a reply (the client would resend:
    /// a duplicate).
    static let injector = #"""
    import json, smtplib, socket, sys, threading
    host, port, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    lock = threading.Lock()
    counts = {"accepted": 0, "refused": 0, "eof_after_dot": 0, "eof_before_dot": 0, "connections": 0}

    def add(key):
        with lock:
            counts[key] += 1

    def worker(k):
        for attempt in range(1000):
            try:
                s = smtplib.SMTP(host, port, timeout=60)
                s.ehlo("load.test")
            except (OSError, smtplib.SMTPException):
                return  # the daemon is gone
            add("connections")
            i = 0
            try:
                while True:
                    i += 1
                    code, _ = s.mail("load@peregrine.test")
                    if code != 250:
                        add("refused"); break
                    code, _ = s.rcpt("u%d-%d@load.test" % (k, i))
                    if code != 250:
                        add("refused"); break
                    s.putcmd("data")
                    code, _ = s.getreply()
                    if code != 354:
                        add("refused"); break
                    s.send(b"Subject: load %d-%d\r\n\r\nbody\r\n.\r\n" % (k, i))
                    try:
                        code, _ = s.getreply()
                    except smtplib.SMTPServerDisconnected:
                        add("eof_after_dot"); break
                    if code == 250:
                        add("accepted")
                    else:
                        add("refused"); break
            except (OSError, smtplib.SMTPException):
                add("eof_before_dot")
            try:
                s.close()
            except OSError:
                pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    with open(out, "w") as f:
        json.dump(counts, f)
    """#
}
