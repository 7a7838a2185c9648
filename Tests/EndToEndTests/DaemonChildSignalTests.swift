#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// The daemon blocks the signals it handles in every thread (ProcessSignals)
/// and ignores SIGPIPE; a program it starts must get neither (issue 12,
/// hardening 3c): an `<acct-file |program>` child started at start-up, and
/// again by a loop thread after it was killed, has an empty signal mask, no
/// inherited ignored signals, and dies of SIGTERM. Per backend (the restart
/// runs on a loop's thread). Scenario 70.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO) struct DaemonChildSignalTests {
    /// `SigBlk`/`SigIgn` of /proc/PID/status as bit sets (bit n-1: signal n).
    static func signalMasks(_ pid: pid_t) -> (blocked: UInt64, ignored: UInt64, state: String)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> String? {
            text.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
        }
        guard let b = field("SigBlk").flatMap({ UInt64($0, radix: 16) }),
              let i = field("SigIgn").flatMap({ UInt64($0, radix: 16) }) else { return nil }
        return (b, i, field("State") ?? "")
    }

    static func bit(_ signal: Int32) -> UInt64 { 1 << UInt64(signal - 1) }

    /// Gone or a zombie waiting for the daemon's waitpid: either way, dead.
    static func isDead(_ pid: pid_t) -> Bool {
        guard let m = signalMasks(pid) else { return true }
        return m.state.hasPrefix("Z")
    }

    @Test(arguments: BackendKind.testable)
    func anAccountingPipeChildGetsNoBlockedSignalsAndDiesOfSIGTERM(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("child-signals", 70, kind)
        let pids = s.dir.file("pids"), out = s.dir.file("piped.csv")
        let program = s.dir.file("loader")
        // O_CLOEXEC: no program started meanwhile keeps it open (exec would fail with ETXTBSY).
        let fd = open(program, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        // exec keeps the pid: the pid written is cat's, the process the daemon feeds.
        let script = Array("#!/bin/sh\necho $$ >> \(pids)\nexec cat >> \(out)\n".utf8)
        _ = script.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <acct-file |\(program)>
                records r
            </acct-file>
            """))
        func children() -> [pid_t] {
            ((try? String(contentsOfFile: pids, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
        }
        // The daemon itself blocks SIGTERM: what the child must not inherit.
        let daemonMasks = try #require(Self.signalMasks(d.process.processIdentifier))
        #expect(daemonMasks.blocked & Self.bit(SIGTERM) != 0, "the daemon's mask \(String(daemonMasks.blocked, radix: 16))")
        #expect(daemonMasks.ignored & Self.bit(SIGPIPE) != 0)

        let reset = Self.bit(SIGTERM) | Self.bit(SIGINT) | Self.bit(SIGHUP) | Self.bit(SIGPIPE)
        var checked: [pid_t] = []
        // The child from start-up (main thread), then the one a loop thread starts after it died.
        for round in 1...2 {
            #expect(E2E.waitUntil(20) { children().count >= round }, "round \(round): \(children())\n\(s.diagnostics)")
            let started = children()
            let child = try #require(started.count >= round ? started[round - 1] : nil, "round \(round): \(started)")
            // cat is running once the file holds lines it copied (the header at least).
            #expect(E2E.waitUntil(20) { Self.signalMasks(child).map { !$0.state.hasPrefix("Z") } ?? false
                                        && ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("type,") })
            let masks = try #require(Self.signalMasks(child), "no /proc/\(child)")
            #expect(masks.blocked == 0, "round \(round): child \(child) SigBlk \(String(masks.blocked, radix: 16))")
            #expect(masks.ignored & reset == 0, "round \(round): child \(child) SigIgn \(String(masks.ignored, radix: 16))")
            kill(child, SIGTERM)
            #expect(E2E.waitUntil(20) { Self.isDead(child) }, "round \(round): child \(child) survived SIGTERM")
            checked.append(child)
            if round == 1 {
                // A record to write: the daemon finds the program gone (EPIPE) and starts it again.
                let c = try d.client()
                #expect(try c.send(to: ["x@child.test"], id: "child-signals") == nil)
                c.quit()
            }
        }
        #expect(checked.count == 2 && checked[0] != checked[1], "\(checked)")
    }
}
