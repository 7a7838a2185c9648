#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// `log-file` (issue 14): the events an operator greps for land in a real
/// log file, each line stamped with ISO 8601 UTC time: the start, a queue
/// entering backoff (a 4.7.28 matched by the pattern list) and leaving it
/// (backoff-to-normal-after-delivery), a `ctl reload` and a reload that
/// failed, the stop; with `log-connections` and `log-commands`, the
/// injection connection and its commands.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonLogFileTests {
    static let timestamp = try! Regex(#"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z "#)

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    static func index(_ lines: [String], _ text: String) -> Int? { lines.firstIndex { $0.contains(text) } }

    @Test(arguments: BackendKind.testable)
    func backoffEntryAndExitAndReloadsAreLoggedWithTimestamps(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("logfile", 150, kind)
        let ip = E2E.ip(150, kind)
        let text = "421-4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address."
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("gmail", domains: "gmail.test", mx: [ip], """
                max-msg-rate 20/s mail burst 10 penalty "\(text)"
                penalty-box 2s mail "\(text)"
            """))
        s.sink = sink
        let (_, port) = try sink.address("gmail")
        let logPath = s.dir.file("peregrine.log")
        let config = """
            smtp-listener \(s.listenIP):2525
            http-mgmt-port \(s.listenIP):8125
            spool \(s.dir.file("spool"))
            log-file \(logPath)
            <source 127.0.0.0/8>
                always-allow-relaying yes
                default-virtual-mta vmta1
                log-connections yes
                log-commands yes
            </source>
            <virtual-mta vmta1>
                smtp-source-host 127.0.0.10 vmta1.test
            </virtual-mta>
            <acct-file \(s.acctPath)>
                records r,d,b,t,tq
            </acct-file>
            <smtp-pattern-list gmail>
                reply /4\\.7\\.28/ mode=backoff
            </smtp-pattern-list>
            <domain gmail.test>
                route [\(ip)]:\(port)
                smtp-pattern-list gmail
                retry-after 1s
                backoff-retry-after 1s
                backoff-to-normal-after-delivery yes
            </domain>

            """
        let d = try s.startDaemon(config)
        // The source IP is in the sink's penalty box before the daemon's first
        // attempt, so that attempt meets 4.7.28 (backoff); once the box lifts,
        // the retry is delivered and the queue leaves backoff.
        let trip = try tripSinkRate(ip, port, from: "127.0.0.10", pairs: 16)
        #expect(trip?.contains("4.7.28") == true, "\(trip ?? "no refusal")")
        let c = try d.client()
        #expect(try c.send(to: ["g1@gmail.test"], id: "log-1") == nil)
        c.quit()
        #expect(s.waitForFinals(1), "\(s.diagnostics)")
        let left = E2E.waitUntil(30) { Self.index(Self.lines(logPath), "queue gmail.test/vmta1: leaving backoff mode") != nil }
        #expect(left, "log:\n\(Self.lines(logPath).joined(separator: "\n"))\n\(s.diagnostics)")

        // A reload, then one that fails (the config no longer parses).
        _ = try d.ctl(["reload"])
        #expect(E2E.waitUntil(20) { Self.index(Self.lines(logPath), "reloaded \(d.configPath)") != nil })
        // Log settings changed on reload are said to wait for the next start (the file is open).
        try (config + "log-rotate 3\n").write(toFile: d.configPath, atomically: true, encoding: .utf8)
        _ = try d.ctl(["reload"])
        #expect(E2E.waitUntil(20) { Self.index(Self.lines(logPath), "take effect at the next start") != nil })
        try (config + "no-such-directive 1\n").write(toFile: d.configPath, atomically: true, encoding: .utf8)
        _ = try? d.ctl(["reload"])  // refused: the answer is an error
        #expect(E2E.waitUntil(20) { Self.index(Self.lines(logPath), "reload failed") != nil })
        d.terminate()

        let lines = Self.lines(logPath)
        let all = lines.joined(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines { #expect(line.prefixMatch(of: Self.timestamp) != nil, "no timestamp: \(line)") }
        let started = Self.index(lines, "running: backend \(kind.rawValue)")
        let entered = Self.index(lines, "queue gmail.test/vmta1: entering backoff mode (reply matched a pattern list: 421")
        let leaving = Self.index(lines, "queue gmail.test/vmta1: leaving backoff mode, back to normal (a delivery succeeded")
        let reloaded = Self.index(lines, "reloaded \(d.configPath)")
        let failed = Self.index(lines, "reload failed, keeping the running config")
        let stopped = lines.lastIndex { $0.hasSuffix(" stopped") }
        #expect(started != nil && entered != nil && leaving != nil && reloaded != nil && failed != nil && stopped != nil, "\(all)")
        if let started, let entered, let leaving, let reloaded, let failed, let stopped {
            #expect(started < entered && entered < leaving && leaving < reloaded && reloaded < failed && failed < stopped, "\(all)")
        }
        #expect(all.contains("no-such-directive"), "the failed reload names its error: \(all)")
        // log-connections and log-commands: the injection, never its body.
        #expect(all.contains("connected to \(s.listenIP):"), "\(all)")
        #expect(all.contains("connection closed"), "\(all)")
        #expect(all.contains("MAIL FROM:<sender@peregrine.test> -> accepted"), "\(all)")
        #expect(all.contains("RCPT TO:<g1@gmail.test> -> accepted"), "\(all)")
        #expect(all.contains("DATA ("), "\(all)")
        #expect(all.contains("end of DATA -> 250 2.0.0 OK id="), "\(all)")
        #expect(!all.contains("Hello from the end-to-end test"), "log-data is off: no body in the log")
    }

    /// A log file that cannot be opened stops the start with the reason on stderr.
    @Test func anUnwritableLogFileRefusesToStart() throws {
        let dir = try TestDirectory("logfile-bad")
        let config = try dir.write("peregrine.conf", """
            smtp-listener \(PrivateLoopback.address(151, 9)):2525
            spool \(dir.file("spool"))
            log-file \(dir.file("missing-dir/peregrine.log"))

            """)
        let r = E2E.run(E2E.executable("peregrine"), ["run", "--config", config, "--backend", "epoll"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("missing-dir/peregrine.log: open failed: No such file or directory"), "\(r.stderr)")
    }
}
