#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
@testable import PeregrineTLS
@testable import PeregrineDaemon

/// `<webhook>` parsing, the event log's group commit and crash repair, the
/// HMAC against a known vector, and the HTTP client against endpoints that
/// misbehave (no HTTP, never answering, an endless header).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct WebhookTests {
    static func parse(_ text: String) throws -> PeregrineConfig { try PeregrineConfig.parse(text, file: "w.conf") }
    static func error(_ text: String) -> String? {
        do { _ = try parse(text); return nil } catch { return "\(error)" }
    }

    @Test func webhookBlocksParse() throws {
        let c = try Self.parse("""
        webhook-max-age 2h
        <webhook orders>
            url https://hooks.example.com:8443/p?x=1
            events delivered, bounced,async-bounce
            max-batch-events 50
            max-batch-delay 250ms
            secret "k3y"
            timeout 3s
        </webhook>
        <webhook plain>
            url http://[::1]/h
        </webhook>
        """)
        #expect(c.webhookMaxAge == .seconds(7200))
        #expect(c.webhooks.count == 2)
        let o = c.webhooks[0]
        #expect(o.url == WebhookURL(scheme: .https, host: "hooks.example.com", port: 8443, path: "/p?x=1"))
        #expect(o.events == [.delivered, .bounced, .asyncBounce])
        #expect(o.maxBatchEvents == 50 && o.maxBatchDelay == .milliseconds(250) && o.timeout == .seconds(3))
        #expect(o.secret == Array("k3y".utf8))
        #expect(c.webhooks[1].url == WebhookURL(scheme: .http, host: "::1", port: 80, path: "/h"))
        #expect(c.webhooks[1].events.count == WebhookEventType.allCases.count)
    }

    @Test func badWebhookBlocksAreRefusedWithTheirLine() {
        #expect(Self.error("<webhook a>\n    events delivered\n</webhook>")?.contains("w.conf:1: <webhook a> needs a url") == true)
        #expect(Self.error("<webhook a>\n    url ftp://x/\n</webhook>")?.contains("w.conf:2:") == true)
        #expect(Self.error("<webhook a>\n    url http://x/\n    events delivered,opened\n</webhook>")?.contains("unknown event type 'opened'") == true)
        #expect(Self.error("<webhook a>\n    url http://x/\n    max-batch-events 0\n</webhook>")?.contains("w.conf:3:") == true)
        #expect(Self.error("<webhook a>\n    url http://x/\n    retries 3\n</webhook>")?.contains("unknown directive 'retries'") == true)
        #expect(Self.error("<webhook a>\n    url http://x/\n    tls-ca-file /nonexistent/ca.pem\n</webhook>")?.contains("cannot read") == true)
        #expect(Self.error("webhook-max-age 0s")?.contains("w.conf:1:") == true)
    }

    /// RFC 4231 test case 2.
    @Test func hmacMatchesTheRFC4231Vector() {
        #expect(HMACSHA256.hex(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    static func event(_ n: Int) -> WebhookEvent {
        WebhookEvent(type: .delivered, timeMillis: 1_700_000_000_000 + Int64(n), id: "m.\(n).delivered", messageID: "m",
                     recipient: "r\(n)@x.test", sender: "s@x.test", diagnostic: "smtp;250 \"ok\"\n\u{1}")
    }

    static func readAll(_ log: WebhookEventLog) -> [WebhookEventLog.Record] {
        let reader = WebhookEventLogReader(log: log)
        var p = WebhookEventLog.Position(segment: log.oldestSegment, offset: 0)
        var out: [WebhookEventLog.Record] = []
        while let r = reader.next(&p, durableEnd: log.durableEnd.0) { out.append(r) }
        return out
    }

    /// Events come back in order across segment rolls and a restart; a torn
    /// tail (a crash mid-write) is cut at start-up and nothing before it is lost.
    @Test func eventLogKeepsOrderAcrossSegmentsAndRepairsATornTail() throws {
        let dir = NSTemporaryDirectory() + "webhook-log-\(getpid())-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = Locked(0)
        do {
            let log = try WebhookEventLog(directory: dir, segmentBytesLimit: 600, log: { _ in })
            // One event per group commit, so that the 600-byte segments fill and roll.
            for n in 0..<20 {
                log.append(Self.event(n)) { written.withLock { $0 += 1 } }
                let deadline = monotonicNanoseconds() + 60_000_000_000
                while written.withLock({ $0 }) <= n && monotonicNanoseconds() < deadline {
                    _ = log.waitForData(after: log.durableEnd.0, deadline: monotonicNanoseconds() + 100_000_000)
                }
            }
            #expect(written.withLock { $0 } == 20)
            let records = Self.readAll(log)
            #expect(records.map(\.sequence) == Array(1...20))
            #expect(WebhookEventLog.segmentNumbers(in: dir).count > 2, "600-byte segments roll")
            let json = try JSONSerialization.jsonObject(with: Data(records[3].json)) as? [String: Any]
            #expect(json?["id"] as? String == "m.3.delivered" && json?["diagnostic"] as? String == "smtp;250 \"ok\"\n\u{1}")
            log.stop()
        }
        // A torn record at the end of the newest segment.
        let newest = WebhookEventLog.segmentNumbers(in: dir).last!
        let fd = open(WebhookEventLog.path(dir, newest), O_WRONLY | O_APPEND)
        _ = [UInt8](repeating: 0x41, count: 30).withUnsafeBytes { write(fd, $0.baseAddress, 30) }
        close(fd)
        let messages = Locked<[String]>([])
        let log = try WebhookEventLog(directory: dir, segmentBytesLimit: 600, log: { m in messages.withLock { $0.append(m) } })
        defer { log.stop() }
        #expect(messages.withLock { $0 }.contains { $0.contains("cut at byte") })
        #expect(Self.readAll(log).map(\.sequence) == Array(1...20))
        #expect(log.durableEnd.1 == 20, "sequence numbers continue after a restart")
        log.deleteSegments(below: newest)
        #expect(WebhookEventLog.segmentNumbers(in: dir).first == newest)
    }

    /// Senders block in `waitForData` on the log's condition while the log
    /// thread waits on it for work. An append that woke one sender instead of
    /// the log thread left its event pending, and its outcome unrecorded,
    /// until the next append. With eight senders waiting, each of 200 appends
    /// is made alone and must become durable on its own (bounded wait; before
    /// the fix an event was stranded within a few appends).
    @Test func everyAppendWakesTheLogThreadWhileSendersWait() throws {
        let dir = NSTemporaryDirectory() + "webhook-wake-\(getpid())-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try WebhookEventLog(directory: dir, log: { _ in })
        defer { log.stop() }
        let stop = Locked(false)
        let waiters = (0..<8).map { _ in
            Thread {
                while !stop.withLock({ $0 }) {
                    _ = log.waitForData(after: log.durableEnd.0, deadline: monotonicNanoseconds() + 30_000_000_000)
                }
            }
        }
        for t in waiters { t.start() }
        defer { stop.withLock { $0 = true }; log.wakeAll() }
        let written = Locked(0)
        var stranded: Int?
        for n in 0..<200 {
            let done = DispatchSemaphore(value: 0)
            log.append(Self.event(n)) { written.withLock { $0 += 1 }; done.signal() }
            if done.wait(timeout: .now() + 20) == .timedOut { stranded = n; break }
        }
        #expect(stranded == nil, "event \(stranded ?? -1) was not written while no other append followed it")
        #expect(written.withLock { $0 } == (stranded ?? 200))
    }

    /// While the disk keeps failing (a full 64 KiB tmpfs), the log's hand-over
    /// queue holds at most `maxPendingWhileFailing` events: the rest are
    /// refused and counted, and their `then` (which records the outcome)
    /// never runs. Once space returns, exactly the queued events are written
    /// and exactly their `then` runs: no outcome without its event.
    @Test(.enabled(if: geteuid() == 0, "needs root to mount a small tmpfs"))
    func eventLogQueueIsBoundedWhileTheDiskFails() throws {
        let dir = NSTemporaryDirectory() + "webhook-full-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard system("mount -t tmpfs -o size=64k tmpfs '\(dir)' 2>/dev/null") == 0 else { Issue.record("tmpfs mount failed"); return }
        defer { _ = system("umount '\(dir)' 2>/dev/null") }
        let log = try WebhookEventLog(directory: dir + "/events", maxPendingWhileFailing: 5, log: { _ in })
        defer { log.stop() }
        // Fill the file system.
        let filler = dir + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let block = [UInt8](repeating: 0x55, count: 4096)
        while block.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        let recorded = Locked<Set<String>>([])
        let total = 20
        log.append(Self.event(0)) { recorded.withLock { _ = $0.insert("m.0.delivered") } }
        let failed = waitFor(60) { log.status.errors >= 1 }
        try #require(failed, "the write to a full tmpfs did not fail")
        for n in 1..<total {
            let id = "m.\(n).delivered"
            log.append(Self.event(n)) { recorded.withLock { _ = $0.insert(id) } }
            #expect(log.backlog.pending <= 5, "the queue grew past its bound")
        }
        let refused = Int(log.backlog.refused)
        #expect(refused >= 1 && refused < total, "refused \(refused)")
        #expect(recorded.withLock { $0 }.isEmpty, "an outcome was recorded before its event was durable")
        unlink(filler)
        let written = waitFor(60) { recorded.withLock { $0.count } == total - refused }
        #expect(written, "\(recorded.withLock { $0.count }) of \(total - refused) recorded after space returned")
        let ids = Self.readAll(log).compactMap { (try? JSONSerialization.jsonObject(with: Data($0.json)) as? [String: Any])?["id"] as? String }
        #expect(Set(ids) == recorded.withLock { $0 } && ids.count == total - refused, "written \(ids) vs recorded")
    }

    /// Polls `condition` every 10 ms until it holds or `seconds` pass.
    func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while monotonicNanoseconds() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    /// Endpoints that misbehave cost one timeout and a closed connection.
    @Test func httpClientBoundsMisbehavingEndpoints() throws {
        for mode in ["garbage", "silent", "endless-header", "ok"] {
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(server) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            listen(server, 4)
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(server, $0, &len) } }
            let port = UInt16(bigEndian: addr.sin_port)
            let serverThread = Thread {
                let c = accept(server, nil, nil)
                guard c >= 0 else { return }
                var buf = [UInt8](repeating: 0, count: 65536)
                _ = recv(c, &buf, buf.count, 0)
                switch mode {
                case "garbage": _ = "SMTP 220 hello\r\n\r\n".withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                case "endless-header":
                    _ = "HTTP/1.1 200 OK\r\n".withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                    let line = Array("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".utf8)
                    for _ in 0..<2000 where send(c, line, line.count, Int32(MSG_NOSIGNAL)) > 0 {}
                case "ok": _ = "HTTP/1.1 204 No Content\r\n\r\n".withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                default: break  // silent: reads the request, never answers
                }
                _ = recv(c, &buf, buf.count, 0)  // until the client closes
                close(c)
            }
            serverThread.start()
            let client = WebhookHTTPClient(url: WebhookURL(scheme: .http, host: "127.0.0.1", port: port, path: "/"), tlsContext: nil)
            let result: String
            do { result = "status \(try client.post(body: Array("[]".utf8), headers: [], timeoutNanoseconds: 500_000_000))" }
            catch { result = error.description }
            client.disconnect()
            switch mode {
            case "garbage": #expect(result.contains("malformed status line"), "\(result)")
            case "silent": #expect(result.contains("timed out"), "\(result)")
            case "endless-header": #expect(result.contains("over 16384 bytes"), "\(result)")
            default: #expect(result == "status 204")
            }
        }
    }
}
