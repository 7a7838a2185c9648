#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// Signals while every descriptor is taken (issue 12 item 9): the daemon
/// under `prlimit --nofile=64:` with more clients than that, then SIGHUP and
/// SIGTERM. Both are handed to `DispatchQueue.global()`, whose first use made
/// libdispatch create its event descriptors; with none left it trapped
/// (SIGILL, "Illegal instruction (core dumped)" in scripts/uring-fault-soak)
/// and the daemon vanished with mail in its spool. Now libdispatch is set up
/// at start (DispatchWarmUp): the reload is answered, the shutdown is clean,
/// exit status 0. Per backend; scenario 73.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO) struct DaemonSignalsWithoutDescriptorsTests {
    @Test(arguments: BackendKind.testable)
    func reloadAndShutdownWorkWithEveryDescriptorTaken(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let prlimit: String = try #require(findTool("prlimit"), "prlimit (util-linux) is missing")
        let dir = try TestDirectory("signals-emfile-\(kind.rawValue)")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: E2E.ip(73, kind, host: 9), ""))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: 1, logPath: dir.file("daemon.log"),
                                  launcher: [prlimit, "--nofile=64:", "--"])
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let pid = d.process.processIdentifier
        var clients: [RawSMTPClient] = []
        for _ in 0..<90 { clients.append(try RawSMTPClient(d.listenIP, d.listenPort, timeoutSeconds: 2)) }
        #expect(E2E.waitUntil(20) { d.log.contains("Too many open files") }, "descriptors not exhausted: \(d.log)")
        kill(pid, SIGHUP)
        #expect(E2E.waitUntil(30) { d.log.contains("reload") || !d.process.isRunning }, "\(d.log)")
        #expect(d.process.isRunning, "the daemon died on SIGHUP without descriptors:\n\(d.log)")
        kill(pid, SIGTERM)
        let exited = E2E.waitUntil(60, every: 0.05) { !d.process.isRunning }
        #expect(exited, "still running 60 s after SIGTERM:\n\(d.log)")
        guard exited else { return }
        #expect(d.process.terminationReason == .exit && d.process.terminationStatus == 0,
                "\(d.process.terminationReason == .exit ? "exit" : "signal") \(d.process.terminationStatus):\n\(d.log)")
        #expect(d.log.contains("peregrine: stopped"), "\(d.log)")
        withExtendedLifetime(clients) {}
    }
}
