#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// An inbound bounce report or complaint that `<bounce-processor>` or
/// `<feedback-loop-processor>` read exists nowhere but in its `rb`/`f`
/// record: the 250 must wait until that record is on disk, or a crash (or a
/// power loss) after the 250 loses a report the reporter will never resend.
/// Scenarios 66 (SIGKILL) and 67 (the fsync before the 250, seen by strace).
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO)
struct DaemonInboundReportDurabilityTests {
    static let processors = """
        <bounce-processor>
            <address-list>
                address /^bounces@reports\\.peregrine\\.test$/
            </address-list>
        </bounce-processor>
        <feedback-loop-processor>
            <address-list>
                address /^fbl@reports\\.peregrine\\.test$/
            </address-list>
        </feedback-loop-processor>
        """

    /// An RFC 3464 report for `rcpt` (what a provider sends hours after accepting).
    static func bounce(_ rcpt: String) -> String {
        "From: Mail Delivery System <MAILER-DAEMON@mx.remote.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            + "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\r\n"
            + "--B1\r\nContent-Type: text/plain\r\n\r\nThe mailbox is gone.\r\n"
            + "--B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\r\n"
            + "Final-Recipient: rfc822; \(rcpt)\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            + "Diagnostic-Code: smtp; 550 5.1.1 <\(rcpt)>: user unknown\r\n--B1--\r\n"
    }

    /// An RFC 5965 complaint about mail to `rcpt`.
    static func complaint(_ rcpt: String) -> String {
        "From: <fbl@isp.test>\r\nSubject: Abuse report\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: multipart/report; report-type=feedback-report; boundary=\"A1\"\r\n\r\n"
            + "--A1\r\nContent-Type: text/plain\r\n\r\nA user reported this message as spam.\r\n"
            + "--A1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: test/1\r\nVersion: 1\r\n"
            + "Original-Mail-From: <news@senders.test>\r\nOriginal-Rcpt-To: <\(rcpt)>\r\nReporting-MTA: dns; fbl.isp.test\r\n"
            + "Source-IP: 127.0.0.10\r\n\r\n"
            + "--A1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: <news@senders.test>\r\nTo: <\(rcpt)>\r\nSubject: news\r\n\r\n"
            + "--A1--\r\n"
    }

    /// Sends `count` bounce reports and `count` complaints on one connection;
    /// returns the last end-of-DATA reply's text (each must be the processor's 250).
    static func sendReports(_ d: DaemonProcess, count: Int, tag: String) throws -> [String] {
        let c = try SinkTestClient(d.listenIP, d.listenPort)
        guard try c.start()?.code == 220 else { throw SinkTestError("no greeting") }
        var replies: [String] = []
        for i in 0..<count {
            for (from, to, data) in [("", "bounces@reports.peregrine.test", bounce("gone-\(tag)-\(i)@remote.test")),
                                     ("fbl@isp.test", "fbl@reports.peregrine.test", complaint("reader-\(tag)-\(i)@isp.test"))] {
                guard try c.command("MAIL FROM:<\(from)>")?.code == 250 else { throw SinkTestError("MAIL refused") }
                guard try c.command("RCPT TO:<\(to)>")?.code == 250 else { throw SinkTestError("RCPT refused") }
                guard try c.command("DATA")?.code == 354 else { throw SinkTestError("DATA refused") }
                try c.send(data + ".\r\n")
                let r = try #require(try c.reply(), "closed after DATA")
                replies.append(r.lines.joined(separator: " "))
            }
        }
        return replies
    }

    /// SIGKILL right after the last 250: every report acknowledged has its
    /// record in the file (before the fix, the last ones sat in the writer's
    /// buffer for up to 100 ms and died with the process).
    @Test(arguments: BackendKind.testable)
    func everyAcknowledgedReportSurvivesASigkill(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("report-kill", 66, kind)
        let d = try s.start(Self.processors)
        let replies = try Self.sendReports(d, count: 5, tag: "k")
        d.crash()
        #expect(replies.count == 10 && replies.allSatisfy { $0.hasPrefix("250 ") && $0.contains("report processed") }, "\(replies)")
        let records = accounting(s.dir.file("reports.csv"))
        let rb = Set(records.of(.remoteBounce).map(\.rcpt)), f = Set(records.of(.feedbackLoop).map(\.rcpt))
        #expect(rb == Set((0..<5).map { "gone-k-\($0)@remote.test" }), "\(kind): rb \(rb.sorted())\n\(s.diagnostics)")
        #expect(f == Set((0..<5).map { "reader-k-\($0)@isp.test" }), "\(kind): f \(f.sorted())\n\(s.diagnostics)")
    }

    /// The order a power loss needs: the accounting file's fsync completes
    /// before the 250 is written to the reporter's socket. strace, attached
    /// to every thread of the running daemon, shows both; on io_uring the
    /// reply goes out through the ring (no syscall to see), so the test runs
    /// on the backends whose socket writes are system calls.
    @Test(arguments: BackendKind.testable.filter { $0 != .ioUring })
    func theRecordIsFsyncedBeforeThe250(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let straceTool = try #require(findTool("strace"), "strace not installed (scripts/setup installs it)")
        let s = try DaemonDSNTests.Scenario("report-fsync", 67, kind)
        let d = try s.start(Self.processors)
        let trace = s.dir.file("strace.txt"), straceErr = s.dir.file("strace.err")
        _ = FileManager.default.createFile(atPath: straceErr, contents: nil)
        let strace = Process()
        strace.executableURL = URL(fileURLWithPath: straceTool)
        // -y: descriptors with their paths; -s: enough of a write to see the reply text.
        strace.arguments = ["-f", "-y", "-s", "80", "-o", trace, "-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
                            "-p", "\(d.process.processIdentifier)"]
        strace.standardError = FileHandle(forWritingAtPath: straceErr)
        try ChildProcess.run(strace)
        // Detached (SIGTERM), bounded: SIGKILL if it does not go (the daemon then runs on untraced).
        func stopStrace() {
            if strace.isRunning { kill(strace.processIdentifier, SIGTERM) }
            if !E2E.waitUntil(10, every: 0.05, { !strace.isRunning }) { kill(strace.processIdentifier, SIGKILL) }
        }
        defer { stopStrace() }
        // strace says "Process N attached with K threads" once it holds every thread.
        try #require(E2E.waitUntil(30, every: 0.05) {
            ((try? String(contentsOfFile: straceErr, encoding: .utf8)) ?? "").contains("attached")
        }, "strace did not attach: \((try? String(contentsOfFile: straceErr, encoding: .utf8)) ?? "")")
        let replies = try Self.sendReports(d, count: 1, tag: "s")
        #expect(replies.count == 2 && replies.allSatisfy { $0.hasPrefix("250 ") }, "\(replies)")
        stopStrace()
        let lines = ((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        // A completed fsync of reports.csv: its whole line, or the resumed half of one that another thread interrupted.
        var fsyncDone: [Int] = []
        var open: [String: Bool] = [:]  // pid → its unfinished syscall is an fsync of reports.csv
        for (i, line) in lines.enumerated() {
            let pid = String(line.prefix { $0 != " " })
            if (line.contains("fsync(") || line.contains("fdatasync(")) && line.contains("reports.csv") {
                if line.contains("<unfinished") { open[pid] = true } else if line.hasSuffix("= 0") { fsyncDone.append(i) }
            } else if open[pid] == true && line.contains("resumed>") {
                open[pid] = nil
                if line.hasSuffix("= 0") { fsyncDone.append(i) }
            }
        }
        let replyLines = lines.indices.filter { lines[$0].contains("report processed") && !lines[$0].contains("resumed>") }
        try #require(replyLines.count == 2, "\(kind): the two 250s not found in the trace:\n\(lines.suffix(60).joined(separator: "\n"))")
        // Each 250 comes after an fsync of the report file that completed after the previous 250.
        var previous = -1
        for r in replyLines {
            #expect(fsyncDone.contains { $0 > previous && $0 < r },
                    "\(kind): no fsync of reports.csv before the 250 at trace line \(r):\n\(lines.suffix(60).joined(separator: "\n"))")
            previous = r
        }
    }
}
