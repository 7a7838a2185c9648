#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineDaemon
import PeregrineAccounting
import PeregrineIO
@testable import PeregrineSink

/// Issue 12, items 1, 4, 5 and 7, against the real `peregrine` daemon on
/// every backend: a client that never reads, connection limits, a slowloris,
/// too many errors, running out of descriptors, the management API's
/// authentication and cross-site defences, and header injection through EHLO.
/// Addresses 127.P.91-99.x (this process's private prefix) are this suite's own.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonHardeningTests {
    func start(_ tag: String, _ scenario: Int, _ kind: BackendKind, threads: Int = 1,
               _ rest: String = "") throws -> (TestDirectory, DaemonProcess) {
        let dir = try TestDirectory("\(tag)-\(kind.rawValue)")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: hardeningIP(scenario, kind, host: 9), rest))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: threads, logPath: dir.file("daemon.log"))
        return (dir, d)
    }

    // MARK: 1. A client that never reads

    /// 32 MB of pipelined NOOPs, never reading a reply. Before: the daemon
    /// read it all and kept every reply (the issue: RSS 55 → 594 MB with
    /// EHLO). Now it stops reading, the client's writes block, the connection
    /// is closed after smtp-idle-timeout without progress, and the daemon's
    /// peak RSS grows by far less than what was sent.
    @Test(arguments: BackendKind.testable)
    func aClientThatNeverReadsDoesNotGrowTheDaemon(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let (dir, d) = try start("noread", 1, kind, "smtp-idle-timeout 1s\n")
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let pid = d.process.processIdentifier
        // Warm up: one ordinary session, so that start-up allocations are in the baseline.
        let warm = try d.client()
        warm.quit()
        let baseline = try #require(procStatusKB(pid, "VmHWM"))
        let c = try RawSMTPClient(d.listenIP, d.listenPort, receiveBuffer: 4096)
        _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
        let chunk = Array(("EHLO never-reads.test\r\n" + String(repeating: "NOOP\r\n", count: 10_000)).utf8)
        let goal = 32 << 20
        var written = 0
        var closed = false
        let deadline = Date().addingTimeInterval(90) // against hanging only
        while written < goal && Date() < deadline {
            let n = chunk.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { written += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                var p = pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 200)
                if p.revents & Int16(POLLERR | POLLHUP) != 0 { closed = true; break }
                continue
            }
            closed = true // EPIPE / ECONNRESET
            break
        }
        let peak = try #require(procStatusKB(pid, "VmHWM"))
        let growthKB = peak - baseline
        print("never-reading client on \(kind): \(written) bytes written, daemon VmHWM \(baseline) → \(peak) kB (+\(growthKB) kB)")
        #expect(closed, "the daemon never closed the connection (\(written) bytes written)")
        #expect(written < goal, "the daemon kept reading: \(written) bytes")
        // The connection's ceiling is ~1.3 MB (input, buffers, ~146 KiB of
        // unsent replies); 32 MB of NOOP are 75 MB of replies.
        #expect(growthKB < 16 * 1024, "daemon peak RSS grew by \(growthKB) kB")
        // Still serving.
        let after = try d.client()
        after.quit()
    }

    /// The same client against peregrine-sink, which serves through the same
    /// SMTPServerConnection: paused, closed after the profile's idle-timeout,
    /// and the sink's peak RSS barely moves.
    @Test(arguments: BackendKind.testable)
    func aClientThatNeverReadsDoesNotGrowTheSink(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("noread-sink-\(kind.rawValue)")
        let mx = hardeningIP(9, kind, host: 1)
        let path = try dir.write("sink.conf", "time-scale 1\n\n" + sinkProfile("inbox", domains: "inbox.test", mx: [mx],
                                                                                  "idle-timeout 1s"))
        let sink = try SinkProcess(["--profile", path, "--port", "0", "--backend", kind.rawValue])
        defer { sink.terminate(); withExtendedLifetime(dir) {} }
        let (ip, port) = try sink.address("inbox")
        let pid = sink.process.processIdentifier
        let warm = try RawSMTPClient(ip, port)
        #expect(warm.reply()?.hasPrefix("220") == true)
        warm.send("QUIT\r\n")
        _ = warm.waitForEOF()
        let baseline = try #require(procStatusKB(pid, "VmHWM"))
        let c = try RawSMTPClient(ip, port, receiveBuffer: 4096)
        _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
        let chunk = Array(("EHLO never-reads.test\r\n" + String(repeating: "NOOP\r\n", count: 10_000)).utf8)
        let goal = 32 << 20
        var written = 0
        var closed = false
        let deadline = Date().addingTimeInterval(90) // against hanging only
        while written < goal && Date() < deadline {
            let n = chunk.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { written += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                var p = pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 200)
                if p.revents & Int16(POLLERR | POLLHUP) != 0 { closed = true; break }
                continue
            }
            closed = true
            break
        }
        let peak = try #require(procStatusKB(pid, "VmHWM"))
        print("never-reading client against the sink on \(kind): \(written) bytes written, sink VmHWM \(baseline) → \(peak) kB (+\(peak - baseline) kB)")
        #expect(closed, "the sink never closed the connection (\(written) bytes written)")
        #expect(written < goal, "the sink kept reading: \(written) bytes")
        #expect(peak - baseline < 16 * 1024, "sink peak RSS grew by \(peak - baseline) kB")
    }

    // MARK: 4. Connection limits

    /// `max-smtp-in` per client address (in `<source>`) and in total: the
    /// connection over the limit gets 421 4.7.0 and is closed; a closed
    /// connection frees its place.
    @Test(arguments: BackendKind.testable)
    func connectionsOverMaxSMTPInGet421(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let limited = hardeningIP(2, kind, host: 1)
        let (dir, d) = try start("maxin", 2, kind, threads: 2, """
            max-smtp-in 4
            <source \(limited)/32>
                max-smtp-in 2
            </source>
            """)
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        func open(_ source: String) throws -> (RawSMTPClient, String?) {
            let c = try RawSMTPClient(d.listenIP, d.listenPort, from: source)
            return (c, c.reply())
        }
        let (a1, g1) = try open(limited), (a2, g2) = try open(limited)
        #expect(g1?.hasPrefix("220 ") == true && g2?.hasPrefix("220 ") == true, "\(g1 ?? "nil") \(g2 ?? "nil")")
        let (a3, g3) = try open(limited)
        #expect(g3?.hasPrefix("421 4.7.0 ") == true && g3?.contains("too many connections from \(limited)") == true,
                "\(g3 ?? "nil")")
        #expect(a3.waitForEOF())
        // A closed connection frees its place (the daemon sees the close soon; bounded retries).
        a1.send("QUIT\r\n")
        #expect(a1.reply()?.hasPrefix("221") == true)
        var again: RawSMTPClient?
        #expect(E2E.waitUntil(10) {
            guard let (c, g) = try? open(limited) else { return false }
            if g?.hasPrefix("220 ") == true { again = c; return true }
            return false
        })
        // Total: two from `limited`, two more from other addresses, the fifth refused.
        let (b1, h1) = try open(hardeningIP(2, kind, host: 2)), (b2, h2) = try open(hardeningIP(2, kind, host: 3))
        #expect(h1?.hasPrefix("220 ") == true && h2?.hasPrefix("220 ") == true, "\(h1 ?? "nil") \(h2 ?? "nil")")
        let (b3, h3) = try open(hardeningIP(2, kind, host: 4))
        #expect(h3?.hasPrefix("421 4.7.0 ") == true && h3?.contains("too many connections") == true, "\(h3 ?? "nil")")
        #expect(b3.waitForEOF())
        let status = try d.ctl(["show", "status"])
        let connections = status["connections"] as? [String: Any] ?? [:]
        #expect((connections["inboundRefused"] as? Int ?? 0) >= 2, "\(connections)")
        withExtendedLifetime((a2, again, b1, b2)) {}
    }

    /// A slowloris: a byte every 200 ms keeps the idle timeout (1 m) away,
    /// but smtp-session-timeout (2 s here) ends the session with 421 4.4.2.
    @Test(arguments: BackendKind.testable)
    func aSlowlorisIsClosedAtTheSessionDeadline(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let (dir, d) = try start("slowloris", 3, kind, "smtp-idle-timeout 1m\nsmtp-session-timeout 2s\n")
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let c = try RawSMTPClient(d.listenIP, d.listenPort)
        #expect(c.reply()?.hasPrefix("220 ") == true)
        let script = Array(String(repeating: "NOOP\r\n", count: 100).utf8) // 600 bytes: 120 s at this pace
        var replies: [String] = []
        var sent = 0
        trickle: for b in script {
            guard c.send([b]) else { break }
            sent += 1
            var p = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 200) > 0 {
                while let r = c.reply() {
                    replies.append(r)
                    if !r.hasPrefix("250") { break trickle }
                    var q = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
                    if poll(&q, 1, 0) <= 0 { break }
                }
                if c.sawEOF { break }
            }
        }
        #expect(replies.last?.hasPrefix("421 4.4.2 ") == true && replies.last?.contains("session time limit") == true,
                "\(replies.suffix(3)) after \(sent) bytes")
        #expect(c.waitForEOF())
        #expect(sent < script.count, "still open after \(sent) trickled bytes")
    }

    /// max-smtp-in-errors 3: the third bad command gets its 500, then 421 4.7.0, then EOF.
    @Test(arguments: BackendKind.testable)
    func tooManyBadCommandsGet421(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let (dir, d) = try start("errors", 4, kind, "max-smtp-in-errors 3\n")
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let c = try RawSMTPClient(d.listenIP, d.listenPort)
        #expect(c.reply()?.hasPrefix("220 ") == true)
        c.send("BOGUS 1\r\nBOGUS 2\r\nBOGUS 3\r\nNOOP\r\n")
        var replies: [String] = []
        while let r = c.reply() { replies.append(r) }
        #expect(replies.map { String($0.prefix(9)) } == ["500 5.5.1", "500 5.5.1", "500 5.5.1", "421 4.7.0"], "\(replies)")
        #expect(c.sawEOF)
    }

    /// Out of descriptors (the daemon started under `prlimit --nofile=64:`,
    /// then more clients than that): accept fails with EMFILE; the daemon
    /// logs one line, not one per retry, keeps its listener, retries after a
    /// pause instead of spinning, and serves again once descriptors free up.
    /// (io_uring takes the limit when an accept is armed, so it must be low
    /// from the start rather than lowered on the running daemon.)
    @Test(arguments: BackendKind.testable)
    func runningOutOfDescriptorsLogsOnceAndRecovers(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let prlimit: String = try #require(findTool("prlimit"), "prlimit (util-linux) is missing")
        let dir = try TestDirectory("emfile-\(kind.rawValue)")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: hardeningIP(5, kind, host: 9), ""))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: 1, logPath: dir.file("daemon.log"),
                                  launcher: [prlimit, "--nofile=64:", "--"])
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let pid = d.process.processIdentifier
        // More clients than descriptors: the first ones are served, the rest wait in the backlog.
        var clients: [RawSMTPClient] = []
        for _ in 0..<90 { clients.append(try RawSMTPClient(d.listenIP, d.listenPort, timeoutSeconds: 2)) }
        #expect(E2E.waitUntil(20) { d.log.contains("accept on") }, "no accept failure logged: \(d.log)")
        // Let the backend retry for a while under EMFILE (a soak window, not synchronisation).
        usleep(1_500_000)
        let linesWhileExhausted = d.log.split(separator: "\n").filter { $0.contains("accept on") }
        #expect(linesWhileExhausted.count == 1, "\(linesWhileExhausted)")
        #expect(linesWhileExhausted.first?.contains("Too many open files") == true, "\(linesWhileExhausted)")
        #expect(d.process.isRunning)
        // Free the descriptors: new clients get their 220 again.
        clients.removeAll()
        var greeted = false
        #expect(E2E.waitUntil(30) {
            guard let c = try? RawSMTPClient(d.listenIP, d.listenPort, timeoutSeconds: 2) else { return false }
            greeted = c.reply()?.hasPrefix("220 ") == true
            return greeted
        }, "\(d.log.suffix(2000))")
        let status = try d.ctl(["show", "status"])
        let failures = (status["connections"] as? [String: Any])?["acceptFailures"] as? Int ?? 0
        print("EMFILE on \(kind): \(failures) accept failures, \(linesWhileExhausted.count) log line(s); daemon pid \(pid)")
        #expect(failures >= 2, "the backend did not retry: \(failures) failures")
        #expect(d.log.split(separator: "\n").filter { $0.contains("accept on") }.count == 1)
    }

    // MARK: 5. Management API

    /// The issue's cross-site POST (evil Origin, text/plain) gets 403 and
    /// pauses nothing; without the token a POST gets 401; a wrong Host or
    /// an undocumented content type is refused; ctl (reading the token file,
    /// mode 0600) still works.
    @Test(arguments: BackendKind.testable)
    func managementRefusesCrossSiteAndUnauthenticatedCalls(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        try #require(access("/usr/bin/curl", X_OK) == 0, "curl is missing (scripts/setup installs it)")
        let nowhere = hardeningIP(6, kind, host: 5)
        let (dir, d) = try start("mgmt", 6, kind, threads: 2, """
            <domain held.test>
                route [\(nowhere)]:9
                retry-after 10m
            </domain>
            """)
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        // A queue to pause: one message for a receiver that is not there.
        let c = try d.client()
        #expect(try c.send(to: ["a@held.test"], id: "held-1") == nil)
        c.quit()
        let queue = queueName("held.test")
        #expect(E2E.waitUntil(20) { (try? d.queues()[queue]) != nil })
        func paused() throws -> Bool { try d.queues()[queue]?["paused"] as? Bool ?? false }

        var st = stat()
        #expect(stat(d.tokenFile, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600, "token file mode \(String(st.st_mode & 0o777, radix: 8))")
        let token = try String(contentsOfFile: d.tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let base = "http://\(d.management)"

        // The issue's request, verbatim.
        let evil = curl(["-X", "POST", "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain",
                         "--data", "queue=*", "\(base)/queues/pause"])
        #expect(evil.status == 403, "\(evil)")
        #expect(try !paused())
        // Same-origin, but no token / a wrong token.
        let noToken = curl(["-X", "POST", "-H", "Content-Type: application/json", "--data", "{\"queue\":\"*\"}",
                            "\(base)/queues/pause"])
        #expect(noToken.status == 401, "\(noToken)")
        let wrong = curl(["-X", "POST", "-H", "Authorization: Bearer 0000000000000000", "-H", "Content-Type: application/json",
                          "--data", "{\"queue\":\"*\"}", "\(base)/queues/pause"])
        #expect(wrong.status == 401, "\(wrong)")
        // With the token, but text/plain: 415; a foreign Host (DNS rebinding): 403.
        let plain = curl(["-X", "POST", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: text/plain",
                          "--data", "queue=*", "\(base)/queues/pause"])
        #expect(plain.status == 415, "\(plain)")
        let rebound = curl(["-X", "POST", "-H", "Host: evil.example", "-H", "Authorization: Bearer \(token)",
                            "-H", "Content-Type: application/json", "--data", "{\"queue\":\"*\"}", "\(base)/queues/pause"])
        #expect(rebound.status == 403, "\(rebound)")
        let readRebound = curl(["-H", "Host: evil.example", "\(base)/status"])
        #expect(readRebound.status == 403, "\(readRebound)")
        #expect(try !paused())
        // Reads need no token.
        let read = curl(["\(base)/status"])
        #expect(read.status == 200, "\(read)")
        // The token, form-encoded: works; then ctl (which reads the token file) resumes.
        let good = curl(["-X", "POST", "-H", "Authorization: Bearer \(token)", "--data", "queue=held.test/*",
                         "\(base)/queues/pause"])
        #expect(good.status == 200 && good.body.contains("\"matched\":1"), "\(good)")
        #expect(try paused())
        let resumed = try d.ctl(["resume", queue])
        #expect(resumed["matched"] as? Int == 1, "\(resumed)")
        #expect(try !paused())
        // ctl without the token: a clear refusal, nothing changed.
        let r = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                       "pause", queue], timeout: 20)
        #expect(r.status != 0 && r.stdout.contains("Authorization"), "\(r)")
        #expect(try !paused())
    }

    /// 100 connections that send one byte and stall do not lock ctl out.
    @Test(arguments: BackendKind.testable)
    func stalledManagementConnectionsDoNotLockCtlOut(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let (dir, d) = try start("mgmt-stall", 7, kind)
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        guard let colon = d.management.lastIndex(of: ":"), let port = UInt16(d.management[d.management.index(after: colon)...]) else {
            Issue.record("no management address: \(d.management)")
            return
        }
        var stalled: [RawSMTPClient] = []
        for _ in 0..<100 {
            let c = try RawSMTPClient(d.managementHost, port, timeoutSeconds: 2)
            c.send("G")
            stalled.append(c)
        }
        let status = try d.ctl(["show", "status"])
        #expect(status["backend"] as? String == kind.rawValue)
        let paused = try d.ctl(["pause", "nothing.test/*"])
        #expect(paused["action"] as? String == "pause", "\(paused)")
        withExtendedLifetime(stalled) {}
    }

    // MARK: 7. Header injection through EHLO

    /// `EHLO a\rX-Loadgen-Id: forged`: refused with 501; the message sent
    /// after a proper EHLO reaches the sink with its own X-Loadgen-Id, and
    /// the sink never sees the forged one (before the fix the bare CR became
    /// a line end on the way out, and the sink recorded "forged").
    @Test(arguments: BackendKind.testable)
    func aHeaderForgedThroughEHLONeverReachesTheReceiver(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("ehlo-inject-\(kind.rawValue)")
        let listenIP = hardeningIP(8, kind, host: 9), mx = hardeningIP(8, kind, host: 1)
        let ids = dir.file("ids")
        let sink = try startSink(dir, serviceIP: listenIP, sinkProfile("inbox", domains: "inbox.test", mx: [mx]), ids: ids)
        defer { sink.terminate() }
        let (_, port) = try sink.address("inbox")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listenIP, """
            <domain inbox.test>
                route [\(mx)]:\(port)
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: 1, logPath: dir.file("daemon.log"))
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let c = try RawSMTPClient(d.listenIP, d.listenPort)
        #expect(c.reply()?.hasPrefix("220 ") == true)
        c.send("EHLO a\rX-Loadgen-Id: forged\r\n")
        let refused = c.reply()
        #expect(refused?.hasPrefix("501 5.5.4 ") == true, "\(refused ?? "nil")")
        // Without a valid EHLO there is no transaction.
        c.send("MAIL FROM:<s@peregrine.test>\r\n")
        #expect(c.reply()?.hasPrefix("503 ") == true)
        c.send("EHLO good.test\r\n")
        #expect(c.reply()?.hasPrefix("250") == true)
        for line in ["MAIL FROM:<s@peregrine.test>", "RCPT TO:<r@inbox.test>"] {
            c.send(line + "\r\n")
            #expect(c.reply()?.hasPrefix("250") == true, "\(line)")
        }
        c.send("DATA\r\n")
        #expect(c.reply()?.hasPrefix("354") == true)
        c.send("X-Loadgen-Id: real-1\r\nSubject: t\r\n\r\nbody\r\n.\r\n")
        #expect(c.reply()?.hasPrefix("250") == true)
        c.send("QUIT\r\n")
        let acct = dir.file("acct.csv")
        #expect(E2E.waitUntil(30) { accounting(acct).finals.count == 1 }, "nothing delivered: \(d.log.suffix(2000))")
        #expect(accounting(acct).finals.first?.type == .delivered)
        sink.terminate() // writes out the ids it recorded
        let raw = (try? String(contentsOfFile: ids, encoding: .utf8)) ?? ""
        #expect(!raw.contains("forged"), "\(raw)")
        #expect(recordedIds(ids).map(\.id) == ["real-1"])
    }
}
