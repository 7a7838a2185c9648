#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// Bounce reports (RFC 3461/3464) end to end: `peregrine run` relays to a
/// receiver that refuses some recipients, and the report arrives at the
/// sender's domain's MX (the same recording receiver), where Python's `email`
/// package reads it and its fields are compared with the `b` records.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct DaemonDSNTests {
    static let sender = "sender@senders.test"

    final class Scenario {
        let dir: TestDirectory
        let receiver: RecordingReceiver
        var daemon: DaemonProcess?
        let kind: BackendKind
        let listenIP: String
        init(_ tag: String, _ scenario: Int, _ kind: BackendKind) throws {
            self.kind = kind
            listenIP = E2E.ip(scenario, kind, host: 9)
            dir = try TestDirectory("\(tag)-\(kind.rawValue)")
            receiver = try RecordingReceiver(dir, ip: E2E.ip(scenario, kind, host: 1))
        }
        var acctPath: String { dir.file("acct.csv") }
        var records: [AccountingRecord] { accounting(acctPath) }

        func start(_ domains: String) throws -> DaemonProcess {
            let route = "route [\(receiver.ip)]:\(receiver.port)"
            let config = daemonConfig(dir, listen: listenIP, """
                host-name mta.peregrine.test
                <domain senders.test>
                    \(route)
                </domain>
                \(domains.replacingOccurrences(of: "ROUTE", with: route))
                """)
            let path = try dir.write("peregrine.conf", config)
            let d = try DaemonProcess(configPath: path, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
            daemon = d
            return d
        }

        /// Reports that reached the sender's MX (null reverse path).
        var reports: [RecordingReceiver.Message] { receiver.messages.filter { $0.mailFrom.isEmpty } }

        /// One transaction with DSN parameters; nil when accepted.
        func inject(from: String, mailParams: String = "", rcpts: [(String, String)], subject: String,
                    body: String = "Hello from the DSN test.\r\n") throws -> String? {
            guard let d = daemon else { return "no daemon" }
            let c = try SinkTestClient(d.listenIP, d.listenPort)
            defer { _ = try? c.command("QUIT") }
            guard try c.start()?.code == 220 else { return "no greeting" }
            guard let m = try c.command("MAIL FROM:<\(from)>\(mailParams)"), m.code == 250 else { return "MAIL refused" }
            for (r, params) in rcpts {
                guard let reply = try c.command("RCPT TO:<\(r)>\(params)"), reply.code == 250 else { return "RCPT \(r) refused" }
            }
            guard try c.command("DATA")?.code == 354 else { return "DATA refused" }
            try c.send("From: <\(from)>\r\nSubject: \(subject)\r\nMessage-ID: <\(subject.replacingOccurrences(of: " ", with: "-"))@senders.test>\r\n\r\n\(body).\r\n")
            guard let e = try c.reply() else { return "closed after DATA" }
            return e.code == 250 ? nil : "DATA: \(e)"
        }

        var diagnostics: String {
            let acct = (try? String(contentsOfFile: acctPath, encoding: .utf8)) ?? ""
            let msgs = receiver.messages.map { "MAIL FROM:<\($0.mailFrom)> \($0.rcpts)\n\($0.data)" }.joined(separator: "\n----\n")
            return "log:\n\(daemon?.log ?? "")\nacct:\n\(acct)\nreceived:\n\(msgs)"
        }
    }

    /// The Diagnostic-Code of a report and the `dsnDiag` of the `b` record say
    /// the same thing ("smtp; 550 …" and "smtp;550 …", folding aside).
    static func sameDiagnostic(_ report: String?, _ record: String) -> Bool {
        // "\r\n" is one Character: isWhitespace, not a match for "\n".
        func norm(_ s: String) -> String {
            s.replacingOccurrences(of: "smtp; ", with: "smtp;").split(whereSeparator: \.isWhitespace)
                .joined(separator: " ")
        }
        return report.map(norm) == norm(record)
    }

    /// NOTIFY variants, ORCPT, ENVID, RET=HDRS and RET=FULL, and the null
    /// sender, through the daemon: exactly the recipients that asked for a
    /// report are in it, its fields match their `b`/`d` records, and a bounce
    /// of a message from the null sender makes no report.
    @Test(arguments: BackendKind.testable)
    func bounceReportsFollowNotifyAndMatchTheRecords(_ kind: BackendKind) throws {
        let s = try Scenario("dsn-notify", 150, kind)
        _ = try s.start("<domain dest.test>\n    ROUTE\n</domain>")

        // A message from the null sender that bounces: a `b` record, never a report.
        #expect(try s.inject(from: "", rcpts: [("bad-null@dest.test", "")], subject: "null sender") == nil)
        // One transaction, every NOTIFY variant.
        #expect(try s.inject(from: Self.sender, mailParams: " RET=HDRS ENVID=batch+2042", rcpts: [
            ("ok@dest.test", ""),                                             // delivered, no report
            ("bad-default@dest.test", " ORCPT=rfc822;orig+2Bdefault@dest.test"), // no NOTIFY: failure reported
            ("bad-never@dest.test", " NOTIFY=NEVER"),                         // never
            ("bad-success@dest.test", " NOTIFY=SUCCESS"),                     // failure not asked for
            ("bad-failure@dest.test", " NOTIFY=FAILURE,DELAY"),               // reported
            ("good-success@dest.test", " NOTIFY=SUCCESS,FAILURE"),            // "relayed" reported
        ], subject: "notify variants") == nil)

        let finals = E2E.waitUntil(60, every: 0.2) { s.records.finals.count >= 7 } && E2E.waitUntil(60, every: 0.2) { !s.reports.isEmpty }
        try #require(finals, "\(kind): no finals or no report\n\(s.diagnostics)")
        // Fence: a later message that bounces; once its report is in, the first
        // message's report (made in the same loop turn as its bounces) is long in.
        #expect(try s.inject(from: Self.sender, mailParams: " RET=FULL", rcpts: [("bad-fence@dest.test", "")],
                             subject: "fence full", body: "The whole original comes back.\r\n") == nil)
        try #require(E2E.waitUntil(60, every: 0.2) { s.reports.count >= 2 }, "\(kind): no fence report\n\(s.diagnostics)")

        let reports = s.reports
        #expect(reports.count == 2, "\(kind): \(s.diagnostics)")
        #expect(reports.allSatisfy { $0.rcpts == [Self.sender] })
        guard let first = reports.first(where: { $0.data.contains("notify variants") }),
              let fence = reports.first(where: { $0.data.contains("fence full") }) else {
            Issue.record("\(kind): reports not told apart\n\(s.diagnostics)"); return
        }
        let records = s.records
        let dsn = try parseDSNWithPython(s.dir, first.data)
        #expect(dsn["content_type"] as? String == "multipart/report")
        #expect(dsn["report_type"] as? String == "delivery-status")
        #expect(dsn["defects"] as? [String] == [])
        #expect(dsn["part_types"] as? [String] == ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        #expect(dsn["returned_subject"] as? String == "notify variants")
        #expect(dsn["returned_body"] as? String == "", "RET=HDRS returns no body")
        let perMessage = dsn["per_message"] as? [String: String] ?? [:]
        #expect(perMessage["Reporting-MTA"] == "dns; mta.peregrine.test")
        #expect(perMessage["Original-Envelope-Id"] == "batch+2042")
        let perRecipient = dsn["per_recipient"] as? [[String: String]] ?? []
        let reported = Set(perRecipient.compactMap { $0["Final-Recipient"] })
        #expect(reported == ["rfc822; bad-default@dest.test", "rfc822; bad-failure@dest.test", "rfc822; good-success@dest.test"],
                "\(kind): \(perRecipient)")
        for r in perRecipient {
            let address = String((r["Final-Recipient"] ?? "").dropFirst("rfc822; ".count))
            guard let record = records.first(where: { $0.rcpt == address && ($0.type == .bounced || $0.type == .delivered) }) else {
                Issue.record("\(kind): no record for \(address)"); continue
            }
            #expect(r["Action"] == record.dsnAction, "\(address)")
            #expect(r["Status"].map { record.dsnStatus.hasPrefix($0 + " ") } == true, "\(address): \(r) vs \(record.dsnStatus)")
            #expect(Self.sameDiagnostic(r["Diagnostic-Code"], record.dsnDiag), "\(address): \(r) vs \(record.dsnDiag)")
            #expect(r["Remote-MTA"].map { record.dsnMta.hasPrefix(String($0.dropFirst("dns; ".count)) + " (") } == true,
                    "\(address): \(r) vs \(record.dsnMta)")
            #expect(r["Original-Recipient"] == (record.orcpt.isEmpty ? nil : record.orcpt.replacingOccurrences(of: "+", with: "+2B")),
                    "\(address): \(r) vs \(record.orcpt)")
            #expect(record.envId == "batch 42")
            #expect(r["Last-Attempt-Date"] != nil)
        }
        #expect(perRecipient.first { $0["Final-Recipient"] == "rfc822; bad-default@dest.test" }?["Original-Recipient"]
                == "rfc822;orig+2Bdefault@dest.test")
        #expect(perRecipient.first { $0["Final-Recipient"] == "rfc822; bad-default@dest.test" }?["Status"] == "5.1.1")
        #expect(perRecipient.first { $0["Final-Recipient"] == "rfc822; good-success@dest.test" }?["Action"] == "relayed")
        // Every bounced recipient has its `b` record, reported or not.
        for r in ["bad-null", "bad-default", "bad-never", "bad-success", "bad-failure", "bad-fence"] {
            #expect(records.contains { $0.type == .bounced && $0.rcpt == "\(r)@dest.test" }, "\(kind): \(r)")
        }

        let full = try parseDSNWithPython(s.dir, fence.data)
        #expect(full["part_types"] as? [String] == ["text/plain", "message/delivery-status", "message/rfc822"])
        #expect(full["returned_subject"] as? String == "fence full")
        #expect((full["returned_body"] as? String)?.contains("The whole original comes back.") == true)
        // The reports themselves were delivered (null sender) and logged like any message.
        #expect(E2E.waitUntil(30, every: 0.2) { s.records.contains { $0.type == .delivered && $0.orig == "" && $0.rcpt == Self.sender } })
    }

    /// A recipient deferred until `bounce-after` bounces as message-expired and
    /// gets a report (5.4.7, Peregrine's own diagnostic, no Remote-MTA); a
    /// queue with `deliver-local-dsn no` writes its `b` record and sends none;
    /// a sender over `dsn-max-rate-per-sender` gets no more reports.
    @Test(arguments: BackendKind.testable)
    func expiryIsReportedAndDeliverLocalDSNNoSendsNone(_ kind: BackendKind) throws {
        let s = try Scenario("dsn-expiry", 151, kind)
        _ = try s.start("""
            dsn-max-rate-per-sender 2/h
            <domain dest.test>
                ROUTE
                retry-after 1s
                bounce-after 3s
            </domain>
            <domain quiet.test>
                ROUTE
                deliver-local-dsn no
            </domain>
            """)
        #expect(try s.inject(from: Self.sender, rcpts: [("bad-quiet@quiet.test", "")], subject: "quiet") == nil)
        try #require(E2E.waitUntil(60, every: 0.2) { s.records.contains { $0.type == .bounced && $0.rcpt == "bad-quiet@quiet.test" } },
                     "\(kind): no b record for the quiet domain\n\(s.diagnostics)")
        // Three bounces for one sender whose rate allows two reports.
        for i in 1...3 {
            #expect(try s.inject(from: "lister@senders.test", rcpts: [("bad-\(i)@dest.test", "")], subject: "rated \(i)") == nil)
        }
        try #require(E2E.waitUntil(60, every: 0.2) { s.records.filter { $0.type == .bounced && $0.orig == "lister@senders.test" }.count == 3 },
                     "\(kind): \(s.diagnostics)")
        #expect(try s.inject(from: Self.sender, rcpts: [("slow@dest.test", "")], subject: "expires") == nil)
        try #require(E2E.waitUntil(90, every: 0.2) { s.reports.contains { $0.data.contains("Subject: expires") } },
                     "\(kind): no expiry report\n\(s.diagnostics)")

        let reports = s.reports
        #expect(!reports.contains { $0.data.contains("Subject: quiet") }, "\(kind): deliver-local-dsn no still sent a report")
        #expect(reports.filter { $0.rcpts == ["lister@senders.test"] }.count == 2, "\(kind): \(s.diagnostics)")
        #expect(reports.count == 3, "\(kind): \(s.diagnostics)")
        #expect(s.daemon?.log.contains("over the sender's report rate") == true)
        let dsn = try parseDSNWithPython(s.dir, try #require(reports.first { $0.data.contains("Subject: expires") }).data)
        #expect(dsn["returned_subject"] as? String == "expires")
        let r = (dsn["per_recipient"] as? [[String: String]] ?? []).first ?? [:]
        let record = try #require(s.records.first { $0.type == .bounced && $0.rcpt == "slow@dest.test" })
        #expect(record.bounceCat == "message-expired")
        #expect(r["Final-Recipient"] == "rfc822; slow@dest.test")
        #expect(r["Action"] == "failed")
        #expect(r["Status"] == "5.4.7")
        #expect(r["Remote-MTA"] == nil)
        #expect(Self.sameDiagnostic(r["Diagnostic-Code"], record.dsnDiag), "\(r) vs \(record.dsnDiag)")
    }
}
