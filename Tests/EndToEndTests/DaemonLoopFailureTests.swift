#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// A loop whose `run()` returns by itself (a backend that gives up; issue 12
/// items 2 and 9): the daemon logs which loop and why, shuts down, and exits
/// with status 1 — neither hanging nor exiting 0. Driven in a real
/// `peregrine run` with the test fault `PEREGRINE_TEST_FAULT=loop-returns=N`
/// (Daemon+TestFault.swift), per backend, with one loop and with two (the
/// live loop must not wait for the dead one's drain: shutdown-timeout is an
/// hour here, so only a shutdown that skips the dead loop ends in time).
/// Scenario 69. Bounds are deadlines against hanging, not timing claims.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO) struct DaemonLoopFailureTests {
    @Test(arguments: BackendKind.testable)
    func aLoopThatReturnsByItselfEndsTheDaemonWithStatus1(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        for (threads, failing) in [(1, 0), (2, 1)] {
            let dir = try TestDirectory("loop-fails-\(threads)-\(kind.rawValue)")
            let listen = E2E.ip(69, kind, host: threads)
            let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, "shutdown-timeout 1h\n"))
            let d = try DaemonProcess(configPath: config, backend: kind, threads: threads, logPath: dir.file("daemon.log"),
                                      launcher: ["/usr/bin/env", "PEREGRINE_TEST_FAULT=loop-returns=\(failing)"])
            defer { d.terminate() }
            let exited = E2E.waitUntil(60, every: 0.05) { !d.process.isRunning }
            #expect(exited, "\(threads) loop(s): still running 60 s after loop \(failing) returned:\n\(d.log)")
            guard exited else { continue }
            #expect(d.process.terminationReason == .exit && d.process.terminationStatus == 1,
                    "\(threads) loop(s): \(d.process.terminationReason == .exit ? "exit" : "signal") \(d.process.terminationStatus)\n\(d.log)")
            let log = d.log
            #expect(log.contains("loop \(failing) stopped without a shutdown (its \(kind) backend returned from run())"), "\(log)")
            // With one loop the process may end before the shutdown it started logs its line.
            if threads > 1 { #expect(log.contains("shutting down (loop \(failing) failed)"), "\(log)") }
            // The orderly end (spools flushed, accounting closed), not the forced-stop _exit.
            #expect(log.contains("stopped after a loop failed (exit status 1)"), "\(log)")
            #expect(!log.contains("did not stop within"), "\(log)")
        }
    }

    /// A fault the daemon does not know stops it at start-up, with a message:
    /// a test whose fault silently did not happen would pass for nothing.
    @Test func anUnknownTestFaultIsRefused() throws {
        let dir = try TestDirectory("loop-fault-unknown")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: E2E.ip(69, .epoll, host: 9), ""))
        let r = E2E.run("/usr/bin/env", ["PEREGRINE_TEST_FAULT=loop-explodes", E2E.executable("peregrine"),
                                         "run", "--config", config, "--backend", "epoll", "--threads", "1"], timeout: 60)
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("PEREGRINE_TEST_FAULT=loop-explodes: unknown test fault"), "\(r.stderr)")
        #expect(!r.stderr.contains("running:"), "\(r.stderr)")
    }
}
