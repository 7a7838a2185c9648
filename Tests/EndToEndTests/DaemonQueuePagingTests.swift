#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import PeregrineIO
import Testing

/// `max-queued-in-memory` (issue #18): beyond the limit a spooled message
/// stays on disk only and is read back as deliveries free room. With a limit
/// of 5 recipients and the receiver down, 30 messages queue: 5 in the
/// scheduler, 25 on disk (counted in `/status`, not inferred from RSS). A
/// restart recovers the same split from the spool. Then the receiver comes
/// up and every message arrives exactly once.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO)
struct DaemonQueuePagingTests {
    static let messages = 30
    static let limit = 5

    @Test(arguments: BackendKind.testable)
    func messagesBeyondTheLimitWaitOnDiskAndAllAreDelivered(kind: BackendKind) throws {
        let dir = try TestDirectory("queue-paging-\(kind.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        let ip = E2E.ip(155, kind, host: 9)
        let receiverIP = E2E.ip(155, kind, host: 8)
        // The receiver's port is fixed on the scenario's own address: nothing listens there until it starts.
        let receiverPort: UInt16 = 2526
        let config = daemonConfig(dir, listen: ip, """
            max-queued-in-memory \(Self.limit)
            <domain paging.test>
                route [\(receiverIP)]:\(receiverPort)
                retry-after 1s
                connect-timeout 5s
            </domain>
            """)
        let configPath = try dir.write("peregrine.conf", config)
        var daemon = try DaemonProcess(configPath: configPath, backend: kind, threads: 1, logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        func status() throws -> [String: Any] { try E2E.json(E2E.httpGet(daemon.management, "/status")) }
        func count(_ s: [String: Any], _ key: String) -> Int { s[key] as? Int ?? -1 }
        func inQueues(_ s: [String: Any]) -> Int {
            let q = s["queued"] as? [String: Any] ?? [:]
            return (q["ready"] as? Int ?? 0) + (q["delayed"] as? Int ?? 0)
        }

        let client = try daemon.client()
        for i in 0 ..< Self.messages {
            let refusal = try client.send(to: ["r\(i)@paging.test"], id: "paging-\(i)")
            #expect(refusal == nil, "\(kind): message \(i): \(refusal ?? "")")
        }
        client.quit()
        // The split is decided before the 250: one loop, so it is exact.
        var s = try status()
        #expect(count(s, "received") == Self.messages, "\(kind): \(s)")
        #expect(count(s, "pagedOut") == Self.messages - Self.limit, "\(kind): \(s)")
        #expect(count(s, "queuedOnDisk") == Self.messages - Self.limit, "\(kind): \(s)")
        #expect(count(s, "queuedInMemoryRecipients") == Self.limit, "\(kind): \(s)")
        #expect(inQueues(s) == Self.limit, "\(kind): \(s)")

        // A restart: the spool holds all 30; recovery keeps the limit too.
        daemon.terminate()
        daemon = try DaemonProcess(configPath: configPath, backend: kind, threads: 1, logPath: dir.file("daemon.log"))
        let requeued = E2E.waitUntil(30) { daemon.log.contains("re-queued \(Self.messages) message(s)") }
        #expect(requeued, "\(kind): \(daemon.log.suffix(2000))")
        s = try status()
        #expect(count(s, "queuedOnDisk") == Self.messages - Self.limit, "\(kind): after restart: \(s)")
        #expect(count(s, "queuedInMemoryRecipients") == Self.limit, "\(kind): after restart: \(s)")

        let receiver = try RecordingReceiver(dir, ip: receiverIP, port: receiverPort)
        defer { receiver.terminate() }
        func ids() -> [String] {
            receiver.messages.compactMap { m in
                m.data.split(separator: "\r\n").first { $0.hasPrefix("X-Loadgen-Id: ") }.map { String($0.dropFirst(14)) }
            }
        }
        let all = try E2E.waitUntil(60, every: 0.1) {
            try count(status(), "delivered") >= Self.messages && ids().count >= Self.messages
        }
        let seen = (try? status()) ?? [:]
        #expect(all, "\(kind): \(ids().count) of \(Self.messages) arrived: \(seen) \(daemon.log.suffix(2000))")
        let got = ids()
        #expect(got.count == Self.messages && Set(got) == Set((0 ..< Self.messages).map { "paging-\($0)" }),
                "\(kind): duplicates or strays: \(got.sorted())")
        s = try status()
        #expect(count(s, "queuedOnDisk") == 0 && count(s, "pagedIn") == Self.messages - Self.limit
                && count(s, "queuedInMemoryRecipients") == 0, "\(kind): \(s)")
        let metrics = String(decoding: try E2E.httpGet(daemon.management, "/metrics"), as: UTF8.self)
        #expect(metrics.contains("peregrine_queued_on_disk_messages 0")
                && metrics.contains("peregrine_paged_in_total \(Self.messages - Self.limit)"), "\(kind)")
    }
}
