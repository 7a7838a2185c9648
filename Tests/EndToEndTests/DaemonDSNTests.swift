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
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonDSNTests {
    static let sender = "sender@senders.test"

    final class Scenario {
        let dir: TestDirectory
        let receiver: RecordingReceiver
        var daemon: DaemonProcess?
        let kind: BackendKind
        let listenIP: String
        init(_ tag: String, _ scenario: Int, _ kind: BackendKind, file: String = #fileID) throws {
            self.kind = kind
            listenIP = E2E.ip(scenario, kind, host: 9, file: file)
            dir = try TestDirectory("\(tag)-\(kind.rawValue)")
            receiver = try RecordingReceiver(dir, ip: E2E.ip(scenario, kind, host: 1, file: file))
        }
        var acctPath: String { dir.file("acct.csv") }
        /// The r/d/b/t/tq file the shared config writes, plus this suite's f/rb file.
        var records: [AccountingRecord] { accounting(acctPath) + accounting(dir.file("reports.csv")) }

        func start(_ domains: String) throws -> DaemonProcess {
            let route = "route [\(receiver.ip)]:\(receiver.port)"
            let config = daemonConfig(dir, listen: listenIP, """
                host-name mta.peregrine.test
                <acct-file \(dir.file("reports.csv"))>
                    records f,rb
                </acct-file>
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
                    headers: String = "", body: String = "Hello from the DSN test.\r\n") throws -> String? {
            guard let d = daemon else { return "no daemon" }
            let c = try SinkTestClient(d.listenIP, d.listenPort)
            defer { _ = try? c.command("QUIT") }
            guard try c.start()?.code == 220 else { return "no greeting" }
            guard let m = try c.command("MAIL FROM:<\(from)>\(mailParams)"), m.code == 250 else { return "MAIL refused" }
            for (r, params) in rcpts {
                guard let reply = try c.command("RCPT TO:<\(r)>\(params)"), reply.code == 250 else { return "RCPT \(r) refused" }
            }
            guard try c.command("DATA")?.code == 354 else { return "DATA refused" }
            try c.send("From: <\(from)>\r\nSubject: \(subject)\r\nMessage-ID: <\(subject.replacingOccurrences(of: " ", with: "-"))@senders.test>\r\n\(headers)\r\n\(body).\r\n")
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
        let s = try Scenario("dsn-notify", 191, kind)
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
        let s = try Scenario("dsn-expiry", 192, kind)
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
        // The b record is in the accounting buffer (flushed every 100 ms); the report may arrive first.
        try #require(E2E.waitUntil(30, every: 0.1) { s.records.contains { $0.type == .bounced && $0.rcpt == "slow@dest.test" } })
        let record = try #require(s.records.first { $0.type == .bounced && $0.rcpt == "slow@dest.test" })
        #expect(record.bounceCat == "message-expired")
        #expect(r["Final-Recipient"] == "rfc822; slow@dest.test")
        #expect(r["Action"] == "failed")
        #expect(r["Status"] == "5.4.7")
        #expect(r["Remote-MTA"] == nil)
        #expect(Self.sameDiagnostic(r["Diagnostic-Code"], record.dsnDiag), "\(r) vs \(record.dsnDiag)")
    }
}

/// `<bounce-processor>` and `<feedback-loop-processor>` end to end: reports
/// sent to the daemon by Python's smtplib (an ARF complaint built with
/// Python's `email` package, an Exim bounce) and Peregrine's own bounce
/// report, routed back to its own listener, become `rb` and `f` records;
/// the processors' recipients are not relayed, the others are.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonInboundReportTests {
    static let sendScript = #"""
    import sys, smtplib, email
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.mime.message import MIMEMessage
    host, port, kind, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if kind == "arf":
        report = MIMEMultipart("report", report_type="feedback-report")
        report["From"] = "<staff@complaints.isp.test>"
        report["To"] = "<%s>" % rcpt
        report["Subject"] = "Abuse report"
        report.attach(MIMEText("This is an abuse report for a message received from 127.0.0.10.\r\n"))
        fields = MIMEText("", "plain")
        fields.replace_header("Content-Type", "message/feedback-report")
        fields.set_payload("Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/2.1\r\nVersion: 1\r\n"
                           "Original-Mail-From: <news@senders.test>\r\nOriginal-Rcpt-To: <reader@isp.test>\r\n"
                           "Reporting-MTA: dns; fbl.isp.test\r\nSource-IP: 127.0.0.10\r\n")
        report.attach(fields)
        original = email.message_from_string("From: <news@senders.test>\r\nTo: <reader@isp.test>\r\n"
                                             "Subject: the news\r\nX-Job: fbljob\r\nMessage-ID: <n1@senders.test>\r\n\r\nHello\r\n")
        report.attach(MIMEMessage(original))
        data, sender = report.as_bytes(), ""
    else:
        data = ("From: Mail Delivery System <Mailer-Daemon@mx.exim.test>\r\n"
                "Subject: Mail delivery failed: returning message to sender\r\n\r\n"
                "This message was created automatically by mail delivery software.\r\n\r\n"
                "A message that you sent could not be delivered to one or more of its\r\n"
                "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
                "  full@exim.test\r\n    host mx.exim.test [192.0.2.10]\r\n"
                "    SMTP error from remote mail server after RCPT TO:<full@exim.test>:\r\n"
                "    552 Mailbox quota exceeded\r\n").encode()
        sender = ""
    with smtplib.SMTP(host, port, timeout=30) as s:
        s.sendmail(sender, [rcpt], data)
    print("sent")
    """#

    @Test(arguments: BackendKind.testable)
    func reportsBecomeRbAndFRecords(_ kind: BackendKind) throws {
        let s = try DaemonDSNTests.Scenario("inbound", 193, kind)
        let d = try s.start("""
            \(ReportProcessors.config)
            <domain dest.test>
                ROUTE
            </domain>
            <domain bounce.peregrine.test>
                route [\(s.listenIP)]:2525
            </domain>
            """)
        let python = try #require(findTool("python3"), "python3 not installed")
        let script = try s.dir.write("send-report.py", Self.sendScript)
        for (kind, rcpt) in [("arf", "fbl@fbl.peregrine.test"), ("exim", "bounces-exim@bounce.peregrine.test")] {
            let r = E2E.run(python, [script, d.listenIP, "\(d.listenPort)", kind, rcpt], timeout: 60)
            #expect(r.status == 0 && r.stdout.contains("sent"), "\(kind): \(r.stderr)")
        }
        // Peregrine's own report comes back: the VERP sender routes to this daemon's bounce processor,
        // in the same transaction as a recipient that is relayed.
        #expect(try s.inject(from: "bounces+bad-loop=dest.test@bounce.peregrine.test",
                             rcpts: [("bad-loop@dest.test", ""), ("ok@dest.test", "")],
                             subject: "loop", headers: "X-Job: loopjob\r\n") == nil)
        // A report for a processor address and a plain recipient in one transaction: the report is read, the other relayed.
        #expect(try s.inject(from: "", rcpts: [("bounces+x=dest.test@bounce.peregrine.test", ""), ("ok2@dest.test", "")],
                             subject: "mixed", body: "Just a note, no bounce in here.\r\n") == nil)

        try #require(E2E.waitUntil(90, every: 0.2) {
            let r = s.records
            return r.of(.remoteBounce).count >= 2 && !r.of(.feedbackLoop).isEmpty
                && r.contains { $0.type == .delivered && $0.rcpt == "ok2@dest.test" }
        }, "\(kind): \(s.diagnostics)")
        let records = s.records
        let f = try #require(records.of(.feedbackLoop).first)
        #expect(f.rcpt == "reader@isp.test")
        #expect(f.orig == "news@senders.test")
        #expect(f.bounceCat == "abuse")
        #expect(f.dsnMta == "fbl.isp.test")
        #expect(f.dlvSourceIp == "127.0.0.10")
        #expect(f.jobId == "fbljob")
        #expect(f.dsnDiag == "arf;abuse (ISP-FBL/2.1)")

        let exim = try #require(records.of(.remoteBounce).first { $0.rcpt == "full@exim.test" })
        #expect(exim.bounceCat == "quota-issues")
        #expect(exim.dsnDiag == "smtp;552 Mailbox quota exceeded")

        let loop = try #require(records.of(.remoteBounce).first { $0.rcpt == "bad-loop@dest.test" }, "\(s.diagnostics)")
        try #require(E2E.waitUntil(30, every: 0.1) { s.records.contains { $0.type == .bounced && $0.rcpt == "bad-loop@dest.test" } })
        let original = try #require(s.records.first { $0.type == .bounced && $0.rcpt == "bad-loop@dest.test" })
        #expect(loop.jobId == "loopjob")
        #expect(loop.dsnStatus == original.dsnStatus)
        #expect(DaemonDSNTests.sameDiagnostic(loop.dsnDiag, original.dsnDiag), "\(loop.dsnDiag) vs \(original.dsnDiag)")
        #expect(loop.bounceCat == original.bounceCat)
        #expect(loop.orig == "bounces+bad-loop=dest.test@bounce.peregrine.test")

        // Nothing addressed to a processor reached the receiver; the relayed recipients did.
        let relayed = s.receiver.messages.flatMap(\.rcpts)
        #expect(relayed.contains("ok@dest.test") && relayed.contains("ok2@dest.test"))
        #expect(!relayed.contains { $0.contains("peregrine.test") }, "\(relayed)")
        #expect(d.log.contains("bounce-processor: message from") && d.log.contains("dropped"), "the unreadable report is logged")
    }

    /// The sink's asynchronous reports: it bounces and complains about half
    /// of what it accepted, over SMTP back to the daemon's listener, and the
    /// processors turn them into `rb` and `f` records for exactly those messages.
    @Test(arguments: BackendKind.testable)
    func sinkReportsComeBackAsRecords(_ kind: BackendKind) throws {
        let s = try DaemonDSNTests.Scenario("sink-reports", 194, kind)
        let sinkIP = E2E.ip(194, kind, host: 2)
        // The sink first: its reports go to the daemon's listener (listenIP:2525, known before it starts),
        // and the daemon routes to the port the sink was given.
        let profile = try s.dir.write("sink.conf", "time-scale 1\n\n" + sinkProfile("isp", domains: "isp.test", mx: [sinkIP]))
        let sink = try SinkProcess(["--profile", profile, "--port", "0", "--stats-port", "\(sinkIP):0", "--backend", "epoll",
                                    "--reports-via", "\(s.listenIP):2525", "--bounce-percent", "50",
                                    "--complaint-percent", "50", "--bounce-to", "bounces-sink@bounce.peregrine.test",
                                    "--complaint-to", "fbl@fbl.peregrine.test"])
        let (sinkHost, sinkPort) = try sink.address("isp")
        _ = try s.start("""
            \(ReportProcessors.config)
            <domain isp.test>
                route [\(sinkHost)]:\(sinkPort)
            </domain>
            """)
        defer { _ = sink.terminate() }
        for i in 1...4 {
            #expect(try s.inject(from: "news@senders.test", rcpts: [("reader\(i)@isp.test", "")], subject: "issue \(i)",
                                 headers: "X-Job: issue\(i)\r\n") == nil)
        }
        // Every record is waited for: the `rb` and `f` records go to
        // reports.csv and the `d` records to the main accounting file, each
        // written on its own schedule (a run beside stress-ng read 2 of 4 `d`).
        try #require(E2E.waitUntil(90, every: 0.2) {
            let r = s.records
            return r.of(.remoteBounce).count >= 2 && r.of(.feedbackLoop).count >= 2
                && r.of(.delivered).filter { $0.rcpt.hasSuffix("@isp.test") }.count >= 4
        }, "\(kind): \(s.diagnostics)\nsink: \((try? sink.stats())?["async_reports"] ?? "-")")
        let records = s.records
        #expect(records.of(.delivered).filter { $0.rcpt.hasSuffix("@isp.test") }.count == 4)
        // Every second message the sink accepted (in its arrival order, which the
        // daemon's parallel connections may change), each linked to its own job.
        let bounced = records.of(.remoteBounce)
        #expect(bounced.count == 2 && Set(bounced.map(\.rcpt)).count == 2, "\(bounced)")
        #expect(bounced.allSatisfy { $0.rcpt.hasPrefix("reader") && $0.rcpt == "reader\($0.jobId.dropFirst("issue".count))@isp.test" },
                "\(bounced)")
        #expect(records.of(.remoteBounce).allSatisfy { $0.bounceCat == "bad-mailbox" && $0.dsnStatus.hasPrefix("5.1.1 ") })
        // Both shares are 50%: the same messages were bounced and complained about.
        #expect(Set(records.of(.feedbackLoop).map(\.rcpt)) == Set(bounced.map(\.rcpt)))
        #expect(records.of(.feedbackLoop).allSatisfy { $0.rcpt == "reader\($0.jobId.dropFirst("issue".count))@isp.test" })
        #expect(records.of(.feedbackLoop).allSatisfy { $0.bounceCat == "abuse" && $0.dsnMta == "mx.isp.sink" && $0.orig == "news@senders.test" })
        let stats = try sink.stats()["async_reports"] as? [String: Any] ?? [:]
        #expect(stats["bounces_sent"] as? Int == 2 && stats["complaints_sent"] as? Int == 2 && stats["failed"] as? Int == 0, "\(stats)")
    }
}
