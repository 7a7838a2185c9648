#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// A delay notice survives a restart (issue 12, hardening 3b): a recipient
/// that got its notice (`notify-of-delay-every`) and is still deferred after
/// the daemon restarts gets no second one — before, the mark was in memory
/// and the first deferral after the restart sent another at once, since the
/// message was long past the interval. The mark is in the spool's
/// `delay-notices` file. Per backend; scenario 72 (RecordingReceiver:
/// `slow…` recipients get 450 4.2.1 every time).
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO)
struct DaemonDelayNoticeRestartTests {
    @Test(arguments: BackendKind.testable)
    func aRestartSendsNoSecondDelayNotice(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("dsn-delay-restart", 72, kind)
        let domains = """
            <domain dest.test>
                ROUTE
                retry-after 1s
                bounce-after 1h
                notify-of-delay-every 2s
            </domain>
            """
        let first = try s.start(domains)
        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("slow-delay@dest.test", " NOTIFY=DELAY")],
                             subject: "delayed across a restart") == nil)
        try #require(E2E.waitUntil(60, every: 0.2) { s.reports.count == 1 }, "\(kind): no delay notice\n\(s.diagnostics)")
        first.terminate()
        let marks = (try? String(contentsOfFile: s.dir.file("spool/delay-notices"), encoding: .utf8)) ?? ""
        #expect(marks.split(separator: "\n").count == 1, "\(kind): delay-notices: \(marks)")

        func deferrals() -> Int { s.records.filter { $0.type == .transient && $0.rcpt == "slow-delay@dest.test" }.count }
        let before = deferrals()
        let second = try s.start(domains)
        defer { second.terminate() }
        #expect(E2E.waitUntil(20) { second.log.contains("re-queued 1 message(s)") }, "\(second.log)")
        // Deferred three more times after the restart, each a chance for a second notice.
        try #require(E2E.waitUntil(60, every: 0.2) { deferrals() >= before + 3 }, "\(kind): not deferred again\n\(s.diagnostics)")
        #expect(s.reports.count == 1, "\(kind): \(s.reports.map(\.data))")
        #expect(!s.records.contains { $0.type == .bounced })
    }
}
