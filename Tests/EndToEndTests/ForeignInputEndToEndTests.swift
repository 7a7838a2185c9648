#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
@testable import PeregrineSink

/// Input a user controls that used to trap a real executable: names in the
/// spool directory the daemon never writes, and out-of-range loadgen flags.
/// Loopback addresses 127.P.140.x are this suite's own (PrivateLoopback).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct ForeignInputEndToEndTests {
    /// A segment named 4294967295.seg made the next segment number overflow, and a
    /// `loop--1` directory became stream -1, used as an index into the workers.
    @Test func daemonStartsBesideSpoolNamesItNeverWrites() throws {
        let kind = BackendKind.epoll
        try kind.requireAvailable()
        let dir = try TestDirectory("foreign-spool")
        let spool = dir.file("spool")
        for sub in ["loop-0", "loop--1", "loop-+1"] {
            try FileManager.default.createDirectory(atPath: spool + "/" + sub, withIntermediateDirectories: true)
        }
        let stray = spool + "/loop-0/4294967295.seg"
        let strayBytes = Data("not a segment this spool wrote".utf8)
        #expect(FileManager.default.createFile(atPath: stray, contents: strayBytes))
        #expect(FileManager.default.createFile(atPath: spool + "/loop--1/000001.seg", contents: Data()))

        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: PrivateLoopback.address(140, 1), ""))
        let daemon = try DaemonProcess(configPath: config, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        #expect(daemon.process.isRunning)
        #expect(daemon.log.contains("4294967295.seg: not a segment name"), "\(daemon.log)")
        // Still serving: the management API answers.
        let status = try daemon.ctl(["show", "status"])
        #expect(status["connections"] != nil)
        daemon.terminate()
        #expect(daemon.process.terminationReason == .exit, "\(daemon.log)")
        // Left alone, not read or truncated.
        #expect(FileManager.default.contents(atPath: stray) == strayBytes)
    }

    /// Each of these used to trap (UInt64 of an infinite or huge Double, Int
    /// multiplication overflow); now each is refused with the flag named.
    @Test func loadgenRefusesOutOfRangeFlags() {
        let exe = E2E.executable("peregrine-loadgen")
        let cases: [(String, String)] = [
            ("--duration", "1e30"), ("--duration", "inf"),
            ("--rate", "1e-300/s"), ("--rate", "1e300/s"), ("--rate", "inf/s"),
            ("--size", "99999999999999999m"), ("--sizes", "4k=1,9223372036854775807k=1"),
            ("--sizes", "4k=inf"),
        ]
        for (flag, value) in cases {
            // The target is never reached: parsing fails first (127.P.140.2:9 has no listener anyway).
            let r = E2E.run(exe, ["--target", PrivateLoopback.address(140, 2) + ":9", "--no-progress", "--count", "1", flag, value], timeout: 30)
            #expect(r.status == 2, "\(flag) \(value): status \(r.status), stderr \(r.stderr)")
            #expect(r.stderr.contains(flag), "\(flag) \(value): \(r.stderr)")
        }
    }
}
