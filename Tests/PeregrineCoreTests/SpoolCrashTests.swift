#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
@testable import PeregrineSpool

/// Kills a real `peregrine spool-crash-writer` process with SIGKILL at a
/// random (seeded, logged) moment, recovers its spool, and checks that every
/// id it printed — printed only after its fsync completed — is there, whole,
/// with its recipients. Repeated per backend.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct SpoolCrashTests {
    static let runsPerBackend = 10

    /// The built `peregrine` executable: next to the test bundle (the products directory).
    static func peregrinePath() -> String? {
        var candidates: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
            // Linux: .build/debug/X.xctest is the test executable; macOS: X.xctest/Contents/MacOS/X.
            if dir.path.hasSuffix("MacOS") { dir = dir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
            candidates.append(dir.appendingPathComponent("peregrine").path)
        }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("peregrine").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test(arguments: BackendKind.testable)
    func sigkillLosesNoAcknowledgedMessage(backend: BackendKind) throws {
        try backend.requireAvailable()
        let exe = try #require(Self.peregrinePath(), "peregrine executable not found next to the test bundle; run `swift build` first")
        let seed = UInt64(ProcessInfo.processInfo.environment["SPOOL_CRASH_SEED"].flatMap { UInt64($0) }
                          ?? UInt64(truncatingIfNeeded: time(nil)))
        var rng = SeededRandom(seed: seed ^ UInt64(backend.rawValue.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        print("spool crash test \(backend): seed \(seed) (set SPOOL_CRASH_SEED to replay)")
        var totalChecked = 0
        for run in 0 ..< Self.runsPerBackend {
            let tmp = SpoolTempDir("crash"); defer { tmp.remove() }
            let recipients = 1 + Int(rng.next() % 4)
            let bodySize = [512, 4096, 20_000][Int(rng.next() % 3)]
            let delayMs = 20 + Int(rng.next() % 250)
            // The second half of the runs restart on a crashed spool: recovery, then writing again.
            let phases = run % 2 == 0 ? 1 : 2
            var printed: [MessageID] = []
            for _ in 0 ..< phases {
                let out = try Self.runAndKill(exe, ["spool-crash-writer", "--dir", tmp.path, "--backend", backend.rawValue,
                                                   "--recipients", String(recipients), "--body-size", String(bodySize),
                                                   "--segment-size", String(1 << 20)],
                                              killAfterMs: delayMs)
                printed += out
            }
            let ok = try Self.verify(dir: tmp.path + "/loop-0", printed: printed, recipients: recipients,
                                     bodySize: bodySize, context: "\(backend) run \(run) seed \(seed)")
            print("spool crash test \(backend) run \(run): killed after \(delayMs) ms, \(recipients) rcpt, body \(bodySize), "
                  + "\(phases) phase(s): \(printed.count) acknowledged ids, \(ok) checked")
            totalChecked += ok
        }
        #expect(totalChecked > 0, "\(backend): the writer never acknowledged anything")
    }

    /// Starts the writer, waits for its first durable id, waits `killAfterMs`, SIGKILLs it,
    /// and returns every complete line it printed.
    static func runAndKill(_ exe: String, _ args: [String], killAfterMs: Int) throws -> [MessageID] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        try ChildProcess.run(p)
        let fd = pipe.fileHandleForReading.fileDescriptor
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        // Drain continuously so the writer never blocks on a full pipe.
        func drain(until deadline: UInt64?) -> Bool {
            while true {
                let now = monotonicNanoseconds()
                if let deadline, now >= deadline { return true }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let wait = deadline.map { Int32(min(100, ($0 - now) / 1_000_000 + 1)) } ?? 100
                if poll(&pfd, 1, wait) > 0 {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n <= 0 { return false }
                    data += buf[0 ..< n]
                    if deadline == nil { return true }
                }
            }
        }
        // First output (or exit), then the random delay, then the kill.
        let startDeadline = monotonicNanoseconds() + 20_000_000_000
        while data.isEmpty && monotonicNanoseconds() < startDeadline && p.isRunning { _ = drain(until: nil) }
        _ = drain(until: monotonicNanoseconds() + UInt64(killAfterMs) * 1_000_000)
        kill(p.processIdentifier, SIGKILL)
        while drain(until: nil) {}
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal, "the writer exited by itself (status \(p.terminationStatus))")
        var ids: [MessageID] = []
        var start = 0
        for (i, b) in data.enumerated() where b == UInt8(ascii: "\n") {
            if let id = MessageID(hex: String(decoding: data[start ..< i], as: UTF8.self)) { ids.append(id) }
            else { Issue.record("unparseable line from the writer") }
            start = i + 1
        }
        return ids
    }

    /// Recovers the spool and checks each printed id. Returns how many were checked.
    static func verify(dir: String, printed: [MessageID], recipients: Int, bodySize: Int, context: String) throws -> Int {
        let r = try SpoolRecovery.recover(directory: dir, log: { print("  recovery: \($0)") }).get()
        for p in r.problems {
            if case .segmentCorrupt = p { Issue.record("\(context): \(p)") }
        }
        var byID: [MessageID: RecoveredMessage] = [:]
        for m in r.messages { byID[m.id] = m }
        var checked = 0
        var files: [UInt32: [UInt8]] = [:]
        for id in printed {
            guard let m = byID[id] else {
                Issue.record("\(context): acknowledged message \(id) lost")
                continue
            }
            #expect(m.envelope == SpoolTestBody.envelope(id: id, recipients: recipients), "\(context): \(id) envelope")
            #expect(m.states.count == recipients)
            for i in 1 ..< max(recipients, 1) { #expect(m.states[i] == .pending, "\(context): \(id) rcpt \(i)") }
            let path = SpoolRecovery.segmentPath(directory: dir, number: m.location.segment)
            if files[m.location.segment] == nil { files[m.location.segment] = SpoolFixtures.readFile(path) }
            let file = files[m.location.segment] ?? []
            let start = Int(m.location.offset) + Int(m.location.bodyOffset)
            let end = Int(m.location.offset) + Int(m.location.recordLength)
            let body = end <= file.count ? Array(file[start ..< end]) : []
            let expected = SpoolTestBody.make(id: id, size: SpoolTestBody.size(id: id, nominal: bodySize))
            if body.count != expected.count || CRC32C.checksum(body) != CRC32C.checksum(expected) {
                Issue.record("\(context): \(id) body damaged (\(body.count) bytes, expected \(expected.count))")
            }
            checked += 1
        }
        return checked
    }
}
