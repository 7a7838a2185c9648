#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineSpool
import PeregrineIO

/// Whether this machine lets the tests mount a small tmpfs (root, and a sandbox that allows mount).
enum SpoolTmpfs {
    static let available: Bool = {
        guard geteuid() == 0, let dir = try? TestDirectory("tmpfs-probe") else { return false }
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        guard mount(dir.path, kilobytes: 64) else { return false }
        unmount(dir.path)
        return true
    }()

    static func mount(_ path: String, kilobytes: Int) -> Bool {
        system("mount -t tmpfs -o size=\(kilobytes)k tmpfs '\(path)' 2>/dev/null") == 0
    }
    static func unmount(_ path: String) { _ = system("umount '\(path)' 2>/dev/null") }
}

/// The spool write-error test (TEST-AUDIT.md §5 item 2, issue #12 item 6):
/// the daemon's spool on a small tmpfs that the test fills. A message whose
/// spool write fails with ENOSPC gets `451 4.3.0`, never 250; `/status` and
/// `/metrics` say the spool is degraded and why; once space returns the
/// daemon takes mail again on its own, on the same connection.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: SpoolTmpfs.available, "needs root and mount -t tmpfs (a small file system to fill)"), .blockingIO)
struct DaemonSpoolFaultTests {
    @Test(arguments: BackendKind.testable)
    func spoolWriteErrorGives451AndTheDaemonKeepsServing(kind: BackendKind) throws {
        let dir = try TestDirectory("spool-full-\(kind.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        let spool = dir.file("spool")
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        guard SpoolTmpfs.mount(spool, kilobytes: 2048) else { Issue.record("\(kind): tmpfs mount failed"); return }
        defer { SpoolTmpfs.unmount(spool) }
        let ip = E2E.ip(189, kind, host: 9)
        // Deliveries go to a closed port on the scenario's own address: they defer and stay queued.
        let config = daemonConfig(dir, listen: ip, """
            <domain spool.test>
                route [\(E2E.ip(189, kind, host: 8))]:9
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, threads: 1,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        func spoolStatus() throws -> [String: Any] {
            try E2E.json(E2E.httpGet(daemon.management, "/status"))["spool"] as? [String: Any] ?? [:]
        }
        func healthyGauge() throws -> String? {
            let text = String(decoding: try E2E.httpGet(daemon.management, "/metrics"), as: UTF8.self)
            return text.split(separator: "\n").first { $0.hasPrefix("peregrine_spool_healthy{") }.map(String.init)
        }
        let client = try daemon.client()
        #expect(try client.send(to: ["a@spool.test"], id: "before") == nil, "\(kind): \(daemon.log.suffix(2000))")
        #expect(try spoolStatus()["state"] as? String == "ok")

        // Fill the file system; keep sending until the spool refuses (a page it holds may take a message or two).
        let filler = spool + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let chunk = [UInt8](repeating: 0x46, count: 65536)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        var refusal: String?
        var accepted = 0
        for i in 0 ..< 200 {
            if let r = try client.send(to: ["b\(i)@spool.test"], id: "full-\(i)") { refusal = r; break }
            accepted += 1
        }
        guard let refusal else { Issue.record("\(kind): never refused on a full spool"); return }
        #expect(refusal.contains("451") && refusal.contains("4.3.0"), "\(kind): \(refusal)")
        #expect(!refusal.contains(spool), "\(kind): the reply names the spool's files: \(refusal)")
        let degraded = try spoolStatus()
        #expect(degraded["state"] as? String == "degraded", "\(kind): \(degraded)")
        #expect((degraded["reason"] as? String)?.contains("No space left") == true, "\(kind): \(degraded)")
        #expect(try healthyGauge()?.hasSuffix(" 0") == true, "\(kind)")
        // What an operator sees: `peregrine ctl show status`.
        let host = String(daemon.management.split(separator: ":").first ?? "")
        let shown = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", host, "--port", daemon.managementPort,
                                                          "show", "status"], timeout: 20)
        #expect(shown.stdout.contains("spool.state") && shown.stdout.contains("degraded")
                && shown.stdout.contains("spool.streams[0].reason"), "\(kind): \(shown.stdout) \(shown.stderr)")
        // Still refused while full (the retries probe the disk: not called ok meanwhile).
        #expect(try client.send(to: ["c@spool.test"], id: "still-full")?.contains("451") == true)

        _ = unlink(filler)
        let recovered = try E2E.waitUntil(30, every: 0.1) { try spoolStatus()["state"] as? String == "ok" }
        #expect(recovered, "\(kind): the spool did not recover after space returned: \(daemon.log.suffix(2000))")
        // The same connection, and a new one, are served again.
        #expect(try client.send(to: ["d@spool.test"], id: "after") == nil, "\(kind)")
        let second = try daemon.client()
        #expect(try second.send(to: ["e@spool.test"], id: "after-2") == nil, "\(kind)")
        #expect(try healthyGauge()?.hasSuffix(" 1") == true, "\(kind)")
        client.quit(); second.quit()
        #expect(daemon.log.contains("writable again"), "\(kind)")
        print("spool write-error \(kind): \(accepted) accepted while filling, refused with: \(refusal)")
    }
}

/// A damaged older segment found at daemon start: reported in the log,
/// copied whole to the quarantine directory (never cut or deleted), every
/// intact record re-queued; `spool-check` keeps reporting the quarantined copy.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonSpoolRecoveryReportTests {
    @Test(arguments: BackendKind.testable)
    func damagedOlderSegmentIsReportedAtStartAndQuarantined(kind: BackendKind) throws {
        let dir = try TestDirectory("spool-damaged-\(kind.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        let stream = dir.file("spool") + "/loop-0"
        let w = try SpoolSyncWriter(directory: stream, segmentSize: 4_000)
        var locations: [MessageLocation] = []
        for i in 0 ..< 40 {
            let id = MessageID(hi: 0xD00D, lo: UInt64(i + 1))
            let envelope = SpoolEnvelope(sender: Array("s@peregrine.test".utf8), recipients: [SpoolRecipient("r\(i)@spool.test")],
                                         receivedAt: 1_700_000_000_000)
            locations.append(try w.append(id: id, envelope: envelope, body: SpoolTestBody.make(id: id, size: 300)))
        }
        try w.sync()
        #expect(Set(locations.map(\.segment)).count >= 3)
        // Garbage over the last record of segment 1 (not the newest).
        let path = SpoolRecovery.segmentPath(directory: stream, number: 1)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let last = locations.last { $0.segment == 1 }!
        for i in Int(last.offset) ..< bytes.count { bytes[i] = 0xEE }
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let ip = E2E.ip(190, kind, host: 9)
        let config = daemonConfig(dir, listen: ip, """
            <domain spool.test>
                route [\(E2E.ip(190, kind, host: 8))]:9
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, threads: 1,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        // The loop thread logs its re-queue count just after the "running" line
        // DaemonProcess waits for: wait for that line, not for the first.
        _ = E2E.waitUntil(30) { daemon.log.contains("re-queued 39 message(s)") }
        let log = daemon.log
        #expect(log.contains("\(path): corrupt data at offset \(last.offset)"), "\(kind): \(log.suffix(3000))")
        #expect(log.contains("1 problem(s) found at start-up") || log.contains("2 problem(s) found at start-up"),
                "\(kind): \(log.suffix(3000))")
        #expect(log.contains("re-queued 39 message(s)"), "\(kind): \(log.suffix(3000))")
        let copy = stream + "/quarantine/000001.seg"
        #expect((try? Data(contentsOf: URL(fileURLWithPath: copy))).map([UInt8].init) == bytes, "\(kind): quarantined copy")
        let check = E2E.run(E2E.executable("peregrine"), ["spool-check", dir.file("spool")], timeout: 30)
        #expect(check.status == 1 && check.stdout.contains("quarantine/000001.seg: damaged segment moved aside"),
                "\(kind): \(check.stdout)")
    }
}
