#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// Delay notices (RFC 3464 `Action: delayed`) after PowerMTA's
/// `notify-of-delay-every`: a recipient still deferred that long after
/// queueing gets one report, if its NOTIFY allows DELAY (none given counts
/// as FAILURE,DELAY, RFC 3461), never with NOTIFY=NEVER or FAILURE alone,
/// never for mail from the null sender, and only one however often it is
/// deferred again. Parsed by Python's `email` package like the bounce
/// reports (DaemonDSNTests). Scenario 68 (RecordingReceiver: `slow…`
/// recipients get 450 4.2.1 every time).
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO)
struct DaemonDelayDSNTests {
    @Test(arguments: BackendKind.testable)
    func oneDelayNoticePerRecipientThatAskedForIt(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("dsn-delay", 68, kind)
        _ = try s.start("""
            <domain dest.test>
                ROUTE
                retry-after 1s
                bounce-after 1h
                notify-of-delay-every 2s
            </domain>
            """)
        let sender = DaemonDSNTests.sender
        #expect(try s.inject(from: "", rcpts: [("slow-null@dest.test", " NOTIFY=DELAY")], subject: "null sender") == nil)
        #expect(try s.inject(from: sender, mailParams: " ENVID=delay+2D1", rcpts: [
            ("slow-default@dest.test", ""),                                          // no NOTIFY: FAILURE,DELAY
            ("slow-delay@dest.test", " NOTIFY=DELAY ORCPT=rfc822;orig-delay@dest.test"),
            ("slow-failure@dest.test", " NOTIFY=FAILURE"),                           // no delay asked
            ("slow-never@dest.test", " NOTIFY=NEVER"),
            ("ok@dest.test", " NOTIFY=DELAY"),                                       // delivered at once
        ], subject: "delayed variants") == nil)

        try #require(E2E.waitUntil(60, every: 0.2) { !s.reports.isEmpty }, "\(kind): no delay notice\n\(s.diagnostics)")
        // Every slow recipient deferred twice more after the notice: no second one comes.
        func deferrals(_ rcpt: String) -> Int { s.records.filter { $0.type == .transient && $0.rcpt == rcpt }.count }
        let seen = ["slow-default", "slow-delay", "slow-failure", "slow-never", "slow-null"].map { deferrals("\($0)@dest.test") }
        try #require(E2E.waitUntil(60, every: 0.2) {
            zip(["slow-default", "slow-delay", "slow-failure", "slow-never", "slow-null"], seen)
                .allSatisfy { deferrals("\($0.0)@dest.test") >= $0.1 + 2 }
        }, "\(kind): not deferred again\n\(s.diagnostics)")

        let reports = s.reports
        #expect(reports.count == 1, "\(kind): \(reports.map(\.data))")
        let report = try #require(reports.first)
        #expect(report.rcpts == [sender])
        let dsn = try parseDSNWithPython(s.dir, report.data)
        #expect(dsn["content_type"] as? String == "multipart/report")
        #expect(dsn["report_type"] as? String == "delivery-status")
        #expect(dsn["defects"] as? [String] == [])
        #expect((dsn["subject"] as? String)?.contains("Delayed Mail") == true, "\(dsn)")
        #expect(dsn["returned_subject"] as? String == "delayed variants")
        #expect((dsn["per_message"] as? [String: String])?["Original-Envelope-Id"] == "delay-1", "ENVID xtext-decoded at injection, re-encoded in the report (nothing in it needs encoding)")
        let perRecipient = dsn["per_recipient"] as? [[String: String]] ?? []
        #expect(Set(perRecipient.compactMap { $0["Final-Recipient"] })
                == ["rfc822; slow-default@dest.test", "rfc822; slow-delay@dest.test"], "\(kind): \(perRecipient)")
        let records = s.records
        for r in perRecipient {
            #expect(r["Action"] == "delayed", "\(r)")
            #expect(r["Status"] == "4.2.1", "\(r)")
            let address = String((r["Final-Recipient"] ?? "").dropFirst("rfc822; ".count))
            // The notice says what the t records say.
            let t = records.last { $0.type == .transient && $0.rcpt == address }
            #expect(DaemonDSNTests.sameDiagnostic(r["Diagnostic-Code"], t?.dsnDiag ?? ""), "\(r) vs \(t?.dsnDiag ?? "no t record")")
            #expect(r["Remote-MTA"] != nil && r["Last-Attempt-Date"] != nil, "\(r)")
        }
        #expect(perRecipient.first { $0["Final-Recipient"] == "rfc822; slow-delay@dest.test" }?["Original-Recipient"]
                == "rfc822;orig-delay@dest.test")
        // Still queued, not bounced: a delay notice is no final state.
        #expect(!records.contains { $0.type == .bounced }, "\(kind): \(records.of(.bounced))")
    }
    /// Mail waiting for a dead destination (nothing listens at its route, so
    /// every connection is refused) is deferred once, at the first failed
    /// wave, and then waits in place while the queue retries; it still gets
    /// its delay notice once it has waited notify-of-delay-every, from a
    /// later wave that writes no `t` record for it. Scenario 143.
    @Test(arguments: BackendKind.testable)
    func mailHeldForADeadDestinationGetsItsDelayNotice(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("dsn-delay-dead", 143, kind)
        let nobody = E2E.ip(143, kind, host: 3)
        _ = try s.start("""
            <domain dead.test>
                route [\(nobody)]:2525
                retry-after 1s
                bounce-after 1h
                notify-of-delay-every 3s
            </domain>
            """)
        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("held@dead.test", " NOTIFY=DELAY")], subject: "held") == nil)
        try #require(E2E.waitUntil(60, every: 0.2) { !s.reports.isEmpty }, "\(kind): no delay notice\n\(s.diagnostics)")
        let records = s.records
        #expect(records.filter { $0.type == .transient && $0.rcpt == "held@dead.test" }.count == 1,
                "\(kind): deferred once, then held: \(records.of(.transient).map(\.dsnDiag))")
        #expect(records.of(.transientQueue).count >= 2, "\(kind): the notice came from a later wave")
        let dsn = try parseDSNWithPython(s.dir, try #require(s.reports.first).data)
        let perRecipient = dsn["per_recipient"] as? [[String: String]] ?? []
        #expect(perRecipient.map { $0["Final-Recipient"] } == ["rfc822; held@dead.test"], "\(perRecipient)")
        #expect(perRecipient.first?["Action"] == "delayed", "\(perRecipient)")
        // Two more failed waves after the notice: no second notice, no second t.
        let waves = records.of(.transientQueue).count
        #expect(E2E.waitUntil(60, every: 0.2) { s.records.of(.transientQueue).count >= waves + 2 }, "\(s.diagnostics)")
        #expect(s.reports.count == 1, "\(kind): one notice however many waves")
        #expect(s.records.filter { $0.type == .transient }.count == 1)
        #expect(!s.records.contains { $0.type == .bounced })
    }
}
