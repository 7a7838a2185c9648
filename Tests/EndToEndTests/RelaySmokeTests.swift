#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// The short version of the `relay` benchmark (issue 7): loadgen → peregrine →
/// accept-all sink on loopback with a durable spool, per backend. It asserts
/// only that nothing accepted was lost or duplicated and that mail flowed —
/// no timing figure is checked here (those live in results/).
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct RelaySmokeTests {
    static var benchExecutable: String { E2E.executable("peregrine-bench") }

    @Test(arguments: BackendKind.testable)
    func relayLosesNothing(_ kind: BackendKind) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.benchExecutable)
        p.arguments = ["relay", "--backend", kind.rawValue, "--duration", "5", "--connections", "8", "--no-results",
                       "--drain-timeout", "60"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try ChildProcess.run(p)
        // Drain both pipes while it runs so a chatty child never blocks on a full pipe.
        // Each box is written by its reader block and read after group.wait().
        final class Box: @unchecked Sendable { var data = Data() }
        let stdoutBox = Box(), stderrBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { stdoutBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { stderrBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(180)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning {
            Issue.record("peregrine-bench relay did not finish within 180 s")
            // SIGTERM: the bench stops its sink, daemon and loadgen; SIGKILL after the grace
            // (its children then die by their death signal).
            stopProcess(p, grace: 30)
        }
        p.waitUntilExit()
        group.wait()
        let stdout = String(decoding: stdoutBox.data, as: UTF8.self)
        let stderr = String(decoding: stderrBox.data, as: UTF8.self)
        #expect(p.terminationStatus == 0, "exit \(p.terminationStatus)\n\(stdout)\n\(stderr)")
        // The table row: target injected/s delivered/s CPU RSS p50 p99 lost dup …
        let row = stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            .first { $0.first.map(String.init) == kind.rawValue }
        guard let row, row.count >= 9 else {
            Issue.record("no result row for \(kind):\n\(stdout)\n\(stderr)")
            return
        }
        #expect(Double(row[1]) ?? 0 > 0, "nothing was injected: \(row)")
        #expect(Double(row[2]) ?? 0 > 0, "nothing was delivered: \(row)")
        #expect(row[7] == "0", "lost messages: \(row)")
        #expect(row[8] == "0", "duplicates: \(row)")
    }
}
