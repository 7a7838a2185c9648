#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// The suppression list end to end (issue 16): `peregrine run` relays to
/// `peregrine-sink`, whose `unknown-user` rule answers `550-5.1.1`; the
/// bounced address is refused at RCPT on the next injection (Python's
/// smtplib), `ctl suppress remove` lets it through, `ctl suppress import`
/// and `add` fill the list, and the list survives a restart and a SIGKILL
/// right after an acknowledged add. Scenarios 45-47.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonSuppressionTests {
    typealias Scenario = DaemonEndToEndTests.Scenario

    /// Sends one message with smtplib; prints a JSON object of the refused
    /// recipients (address → [code, text]) or `{"error": ...}`.
    static let sendScript = #"""
    import sys, json, smtplib
    host, port, sender = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rcpts = sys.argv[4:]
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: suppression test\r\n\r\nHello.\r\n" % (sender, rcpts[0])).encode()
    try:
        with smtplib.SMTP(host, port, timeout=30) as s:
            refused = s.sendmail(sender, rcpts, msg)
        print(json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
    except smtplib.SMTPRecipientsRefused as e:
        print(json.dumps({"all": True, **{k: [v[0], v[1].decode()] for k, v in e.recipients.items()}}))
    except Exception as e:
        print(json.dumps({"error": repr(e)}))
    """#

    final class Rig {
        let s: Scenario
        let python: String
        let script: String
        var sinkPort: UInt16 = 0, sinkIP = ""
        init(_ tag: String, _ scenario: Int, _ kind: BackendKind) throws {
            s = try Scenario(tag, scenario, kind)
            python = try #require(findTool("python3"), "python3 not installed")
            script = try s.dir.write("send.py", DaemonSuppressionTests.sendScript)
            let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("isp", domains: "isp.test", mx: [E2E.ip(scenario, kind, host: 1)],
                "unknown-user \"550-5.1.1 The email account that you tried to reach does not exist.\" unknown*"))
            s.sink = sink
            (sinkIP, sinkPort) = try sink.address("isp")
        }
        var suppressedPath: String { s.dir.file("suppressed.csv") }
        var config: String {
            daemonConfig(s.dir, listen: s.listenIP, """
                <acct-file \(suppressedPath)>
                    records s
                </acct-file>
                <domain isp.test>
                    route [\(sinkIP)]:\(sinkPort)
                </domain>
                <domain blocked.test>
                    route [\(sinkIP)]:\(sinkPort)
                </domain>
                """)
        }
        @discardableResult
        func start() throws -> DaemonProcess {
            // A restart appends to the same log and keeps the spool (and the list in it).
            let d = try DaemonProcess(configPath: try s.dir.write("peregrine.conf", config), backend: s.kind, threads: 2,
                                      logPath: s.dir.file("daemon.log"))
            s.daemon = d
            return d
        }
        /// The recipients refused when sending to `rcpts` (address → (code, text)).
        func send(_ rcpts: [String], from sender: String = "news@senders.test") throws -> [String: (Int, String)] {
            let d = try #require(s.daemon)
            let r = E2E.run(python, [script, d.listenIP, "\(d.listenPort)", sender] + rcpts, timeout: 60)
            let object = try E2E.json(Data(r.stdout.utf8))
            if let e = object["error"] { throw SinkTestError("smtplib: \(e) \(r.stderr)") }
            var out: [String: (Int, String)] = [:]
            for (k, v) in object { if let pair = v as? [Any], let code = pair[0] as? Int { out[k] = (code, pair[1] as? String ?? "") } }
            return out
        }
        func ctl(_ args: [String]) throws -> [String: Any] { try #require(s.daemon).ctl(["suppress"] + args) }
        func isSuppressed(_ address: String) throws -> Bool { try ctl(["check", address])["suppressed"] as? Bool == true }
        var suppressedRecords: [AccountingRecord] { accounting(suppressedPath) }
    }

    /// A 5.1.1 bounce from the sink suppresses the address (any letter case);
    /// the next RCPT gets `550 5.7.1 <addr>: recipient is suppressed (hard-bounce)`
    /// and an `s` record; `ctl suppress remove` lets it through again.
    @Test(arguments: BackendKind.testable)
    func aBouncedAddressIsRefusedUntilRemoved(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let rig = try Rig("supp-bounce", 45, kind)
        let s = rig.s
        try rig.start()
        #expect(try rig.send(["unknown1@isp.test", "ok1@isp.test"]).isEmpty)
        try #require(E2E.waitUntil(60, every: 0.2) { s.records.contains { $0.type == .bounced && $0.rcpt == "unknown1@isp.test" } },
                     "\(kind): no bounce\n\(s.diagnostics)")
        let bounce = try #require(s.records.first { $0.type == .bounced && $0.rcpt == "unknown1@isp.test" })
        #expect(bounce.bounceCat == "bad-mailbox" && bounce.dsnStatus.hasPrefix("5.1.1"))
        #expect(try rig.isSuppressed("unknown1@isp.test"))
        #expect(try !rig.isSuppressed("ok1@isp.test"))

        let refused = try rig.send(["Unknown1@ISP.test", "ok2@isp.test"])
        #expect(refused.count == 1, "\(refused)")
        let reply = try #require(refused["Unknown1@ISP.test"], "\(refused)")
        #expect(reply.0 == 550)
        #expect(reply.1 == "5.7.1 <Unknown1@ISP.test>: recipient is suppressed (hard-bounce)", "\(reply.1)")
        #expect(E2E.waitUntil(30, every: 0.2) { !rig.suppressedRecords.isEmpty }, "no s record")
        let record = try #require(rig.suppressedRecords.first)
        #expect(record.type == .suppressed && record.rcpt == "Unknown1@ISP.test" && record.orig == "news@senders.test")
        #expect(record.bounceCat == "hard-bounce" && record.dsnStatus.hasPrefix("5.7.1"))
        #expect(record.dsnDiag == "smtp;550 5.7.1 <Unknown1@ISP.test>: recipient is suppressed (hard-bounce)", "\(record.dsnDiag)")
        // ok2 went through: delivered.
        #expect(E2E.waitUntil(60, every: 0.2) { s.records.contains { $0.type == .delivered && $0.rcpt == "ok2@isp.test" } })

        // Removed: accepted at RCPT again (and, the sink refusing it still, bounced again and suppressed again).
        let removed = try rig.ctl(["remove", "UNKNOWN1@isp.test"])
        #expect(removed["removed"] as? Int == 1, "\(removed)")
        #expect(try !rig.isSuppressed("unknown1@isp.test"))
        #expect(try rig.send(["unknown1@isp.test"]).isEmpty)
        #expect(E2E.waitUntil(60, every: 0.2) { s.records.filter { $0.type == .bounced && $0.rcpt == "unknown1@isp.test" }.count == 2 },
                "\(kind): the removed address was not relayed\n\(s.diagnostics)")
        #expect(E2E.waitUntil(30, every: 0.2) { (try? rig.isSuppressed("unknown1@isp.test")) == true })
    }

    /// The HTTP injection API checks the same list: a suppressed recipient is
    /// listed as "rejected" with the list's reason (and an `s` record with
    /// srcType `api`) while the others in the call are queued; once removed,
    /// it is queued too. Scenario 48.
    @Test(arguments: BackendKind.testable)
    func theHTTPAPIRejectsASuppressedRecipient(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let rig = try Rig("supp-http", 48, kind)
        let s = rig.s
        let config = rig.config + """

            http-injection-listener \(s.listenIP):8080
            <api-key shop>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
            </api-key>
            """
        s.daemon = try DaemonProcess(configPath: try s.dir.write("peregrine.conf", config), backend: kind, threads: 2,
                                     logPath: s.dir.file("daemon.log"))
        let added = try rig.ctl(["add", "blocked@isp.test"])
        #expect(added["added"] as? Int == 1, "\(added)")
        let post = try s.dir.write("post.py", #"""
            import json, sys, time, urllib.request, urllib.error
            host, secret = sys.argv[1], sys.argv[2]
            body = {"sender": "news@senders.test", "recipients": ["Blocked@isp.test", "fine@isp.test"],
                    "raw": "From: news@senders.test\nSubject: api\n\nhello\n"}
            req = urllib.request.Request("http://%s:8080/api/v1/messages" % host, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer shop:" + secret})
            for attempt in range(100):
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
                        break
                except urllib.error.HTTPError as e:
                    print(json.dumps({"status": e.code, "body": json.loads(e.read() or b"null")}))
                    break
                except OSError:
                    time.sleep(0.1)  # the API listener is not up yet
            """#)
        func inject() throws -> [String: Any] {
            let r = E2E.run(rig.python, [post, s.listenIP, DaemonHTTPInjectionTests.secret], timeout: 60)
            let out = try E2E.json(Data(r.stdout.utf8))
            #expect(out["status"] as? Int == 200, "\(r.stdout) \(r.stderr)")
            return out["body"] as? [String: Any] ?? [:]
        }
        let first = try inject()
        #expect(first["queued"] as? Int == 1 && first["rejected"] as? Int == 1, "\(first)")
        let items = first["recipients"] as? [[String: Any]] ?? []
        let blocked = try #require(items.first { $0["recipient"] as? String == "Blocked@isp.test" }, "\(first)")
        #expect(blocked["status"] as? String == "rejected")
        #expect(blocked["reason"] as? String == "5.7.1 <Blocked@isp.test>: recipient is suppressed (operator)"
                || (blocked["reason"] as? String ?? "").contains("recipient is suppressed (operator)"), "\(blocked)")
        #expect(items.first { $0["recipient"] as? String == "fine@isp.test" }?["status"] as? String == "queued", "\(first)")
        #expect(E2E.waitUntil(30, every: 0.2) { !rig.suppressedRecords.isEmpty }, "no s record")
        let record = try #require(rig.suppressedRecords.first)
        #expect(record.rcpt == "Blocked@isp.test" && record.srcType == "api" && record.bounceCat == "operator", "\(record)")

        #expect(try rig.ctl(["remove", "blocked@isp.test"])["removed"] as? Int == 1)
        let second = try inject()
        #expect(second["queued"] as? Int == 2 && second["rejected"] as? Int == 0, "\(second)")
        #expect(E2E.waitUntil(60, every: 0.2) { s.records.contains { $0.type == .delivered && $0.rcpt == "Blocked@isp.test" } },
                "\(s.diagnostics)")
        #expect(rig.suppressedRecords.count == 1)
    }

    /// `ctl suppress add` of a domain and `import FILE` fill the list; a file
    /// with a bad line imports nothing and names the line; the list survives
    /// a clean restart and a SIGKILL right after an acknowledged change.
    @Test(arguments: BackendKind.testable)
    func operatorEntriesSurviveRestartAndKill(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let rig = try Rig("supp-ctl", 46, kind)
        let s = rig.s
        try rig.start()
        let added = try rig.ctl(["add", "blocked.test", "one@isp.test"])
        #expect(added["added"] as? Int == 2, "\(added)")
        var refused = try rig.send(["anyone@Blocked.test", "one@isp.test", "two@isp.test"])
        #expect(refused["anyone@Blocked.test"]?.1 == "5.7.1 <anyone@Blocked.test>: recipient is suppressed (operator)", "\(refused)")
        #expect(refused["one@isp.test"]?.0 == 550 && refused["two@isp.test"] == nil, "\(refused)")

        // A bad line: nothing imported, the line named.
        let bad = try s.dir.write("bad.txt", "# suppression import\nfine@isp.test\nnot an address\n")
        let d = try #require(s.daemon)
        let r = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                      "--token-file", d.tokenFile, "suppress", "import", bad], timeout: 30)
        #expect(r.status != 0 && r.stderr.contains("\(bad):3: not an address or domain"), "\(r)")
        #expect(try !rig.isSuppressed("fine@isp.test"))
        // 12,000 entries: three requests.
        var lines = ["# imported", ""]
        for i in 0..<12_000 { lines.append("imported\(i)@isp.test") }
        let good = try s.dir.write("good.txt", lines.joined(separator: "\n") + "\n")
        let imported = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                             "--token-file", d.tokenFile, "suppress", "import", good], timeout: 60)
        #expect(imported.status == 0 && imported.stdout.contains("imported: 12000 added"), "\(imported)")
        let listed = try rig.ctl(["list", "--limit", "5"])
        #expect(listed["count"] as? Int == 12_002, "\(listed)")
        let entries = (listed["entries"] as? [[String: Any]] ?? []).compactMap { $0["entry"] as? String }
        #expect(entries == ["@blocked.test", "one@isp.test", "imported0@isp.test", "imported1@isp.test", "imported2@isp.test"])

        // Clean restart.
        d.terminate()
        try rig.start()
        refused = try rig.send(["imported11999@isp.test", "x@blocked.test", "three@isp.test"])
        #expect(Set(refused.keys) == ["imported11999@isp.test", "x@blocked.test"], "\(refused)")
        #expect(s.daemon?.log.contains("12002 entries loaded") == true, "\(s.daemon?.log ?? "")")

        // SIGKILL right after acknowledged changes: none lost.
        #expect(try rig.ctl(["add", "late@isp.test"])["added"] as? Int == 1)
        #expect(try rig.ctl(["remove", "blocked.test"])["removed"] as? Int == 1)
        s.daemon?.crash()
        try rig.start()
        #expect(try rig.isSuppressed("late@isp.test"))
        #expect(try !rig.isSuppressed("x@blocked.test"))
        #expect(try rig.isSuppressed("imported5000@isp.test"))
        refused = try rig.send(["late@isp.test", "x@blocked.test"])
        #expect(Set(refused.keys) == ["late@isp.test"], "\(refused)")

        // Refusals: a bad entry (422, nothing changed), no token (401).
        let r422 = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                         "--token-file", d.tokenFile, "suppress", "add", "ok@isp.test", "a b@c"], timeout: 30)
        #expect(r422.status == 1 && r422.stdout.contains("not an address or domain") && r422.stdout.contains("nothing was changed"), "\(r422)")
        #expect(try !rig.isSuppressed("ok@isp.test"))
        let noToken = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                            "suppress", "add", "x@isp.test"], timeout: 30)
        #expect(noToken.status == 1 && noToken.stdout.contains("Bearer"), "\(noToken)")

        // The API itself (Python's http.client): malformed or mistyped bodies get 400 and change nothing.
        let apiScript = try s.dir.write("api.py", #"""
            import sys, http.client, json
            host, port, token = sys.argv[1], int(sys.argv[2]), open(sys.argv[3]).read().strip()
            out = []
            for method, body in [("POST", '{"entries": ["a@b.test"'), ("POST", '{"entries": 5}'), ("POST", '{"entries": [1]}'),
                                 ("POST", '{"entries": ["ok@isp.test"], "reason": "whim"}'), ("DELETE", '{}'), ("PUT", '{}')]:
                c = http.client.HTTPConnection(host, port, timeout=20)
                c.request(method, "/api/v1/suppressions", body=body,
                          headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                r = c.getresponse()
                out.append([r.status, json.loads(r.read() or b"{}").get("error", "")])
            print(json.dumps(out))
            """#)
        let api = E2E.run(python3(), [apiScript, d.managementHost, d.managementPort, d.tokenFile], timeout: 60)
        let answers = try JSONSerialization.jsonObject(with: Data(api.stdout.utf8)) as? [[Any]] ?? []
        #expect(answers.map { $0[0] as? Int ?? 0 } == [400, 400, 400, 400, 400, 405], "\(api)")
        #expect((answers.first?[1] as? String)?.contains("not a JSON object") == true, "\(answers)")
        #expect((answers.dropFirst(3).first?[1] as? String)?.contains("operator, hard-bounce or complaint") == true, "\(answers)")
        #expect(try !rig.isSuppressed("a@b.test") && !rig.isSuppressed("ok@isp.test"))
    }
}

private func python3() -> String { findTool("python3") ?? "/usr/bin/python3" }

/// The list fed by inbound reports and guarding the DSN generator: an ARF
/// complaint (`f`) and an RFC 3464 bounce report of status 5.1.1 (`rb`),
/// sent by Python's smtplib to the processors, suppress their recipients
/// (a 4xx-class quota report does not); and a bounce of mail from a
/// suppressed sender makes no report, while another sender's does.
/// Scenario 47 (RecordingReceiver: `bad…` recipients get 550 5.1.1).
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonSuppressionReportTests {
    static let dsnScript = #"""
    import sys, smtplib
    host, port, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = ("From: Mail Delivery System <MAILER-DAEMON@mx.remote.test>\r\n"
            "To: <%s>\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\r\n"
            "--B1\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            "--B1\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.remote.test\r\n\r\n"
            "Final-Recipient: rfc822; gone@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <gone@remote.test>: user unknown\r\n"
            "--B1--\r\n") % rcpt
    with smtplib.SMTP(host, port, timeout=30) as s:
        s.sendmail("", [rcpt], data.encode())
    print("sent")
    """#

    @Test(arguments: BackendKind.testable)
    func reportsSuppressAndSuppressedSendersGetNoDSN(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("supp-reports", 47, kind)
        let d = try s.start("""
            \(ReportProcessors.config)
            <domain dest.test>
                ROUTE
            </domain>
            """)
        func check(_ address: String) throws -> String? {
            let r = try d.ctl(["suppress", "check", address])
            return r["suppressed"] as? Bool == true ? r["reason"] as? String ?? "?" : nil
        }
        let python = try #require(findTool("python3"), "python3 not installed")
        let arf = try s.dir.write("send-report.py", DaemonInboundReportTests.sendScript)
        let dsn = try s.dir.write("send-dsn.py", Self.dsnScript)
        var r = E2E.run(python, [arf, d.listenIP, "\(d.listenPort)", "arf", "fbl@fbl.peregrine.test"], timeout: 60)
        #expect(r.status == 0 && r.stdout.contains("sent"), "\(r.stderr)")
        r = E2E.run(python, [arf, d.listenIP, "\(d.listenPort)", "exim", "bounces-exim@bounce.peregrine.test"], timeout: 60)
        #expect(r.status == 0 && r.stdout.contains("sent"), "\(r.stderr)")
        r = E2E.run(python, [dsn, d.listenIP, "\(d.listenPort)", "bounces-dsn@bounce.peregrine.test"], timeout: 60)
        #expect(r.status == 0 && r.stdout.contains("sent"), "\(r.stderr)")
        try #require(E2E.waitUntil(60, every: 0.2) {
            let records = s.records
            return records.of(.feedbackLoop).count >= 1 && records.of(.remoteBounce).count >= 2
        }, "\(kind): \(s.diagnostics)")
        let gone = try #require(s.records.of(.remoteBounce).first { $0.rcpt == "gone@remote.test" }, "\(s.records.of(.remoteBounce))")
        #expect(gone.bounceCat == "bad-mailbox", "\(gone)")
        #expect(try check("reader@isp.test") == "complaint")
        #expect(try check("gone@remote.test") == "hard-bounce")
        #expect(try check("full@exim.test") == nil, "a quota report suppresses nothing")

        // A suppressed sender's bounce: a b record, no report; another sender's bounce (the fence) gets one.
        #expect(try d.ctl(["suppress", "add", "quiet@senders.test"])["added"] as? Int == 1)
        #expect(try s.inject(from: "quiet@senders.test", rcpts: [("bad-quiet@dest.test", "")], subject: "quiet") == nil)
        try #require(E2E.waitUntil(60, every: 0.2) { s.records.contains { $0.type == .bounced && $0.rcpt == "bad-quiet@dest.test" } },
                     "\(kind): \(s.diagnostics)")
        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("bad-fence@dest.test", "")], subject: "fence") == nil)
        // The fence's report made, the quiet one (bounced first) would have been made before it.
        try #require(E2E.waitUntil(60, every: 0.2) { s.reports.contains { $0.rcpts == [DaemonDSNTests.sender] } },
                     "\(kind): no fence report\n\(s.diagnostics)")
        let reports = s.reports
        #expect(reports.count == 1 && !reports.contains { $0.rcpts.contains("quiet@senders.test") }, "\(reports.map(\.rcpts))")
        // Both bounced recipients were suppressed in turn.
        #expect(try check("bad-quiet@dest.test") == "hard-bounce")
        #expect(try check("bad-fence@dest.test") == "hard-bounce")
    }
}
