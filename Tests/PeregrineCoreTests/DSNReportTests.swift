import Foundation
import Testing
import PeregrineTestSupport
import PeregrineIO
import PeregrineSMTP
import PeregrineSpool
import PeregrineEngine
import PeregrineConfig
@testable import PeregrineDaemon

/// The bounce report (RFC 3464) as bytes, read back by Python's `email`
/// package, and the rules that decide whether one is sent at all.
@Suite(.blockingIO) struct DSNReportTests {
    static let original = "Received: from a ([127.0.0.1])\r\n\tby b; Sat, 5 Dec 2026 12:00:00 +0000\r\n"
        + "From: <sender@senders.test>\r\nSubject: the original\r\nMessage-ID: <o1@senders.test>\r\n\r\n"
        + "Line one of the body.\r\n..a line that was dot-stuffed\r\n"

    static func report(ret: DSNReturn, envid: String? = "ENV 42+x") -> DeliveryStatusReport {
        let bad = SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 1, 1),
                            lines: ["The email account that you tried to reach does not exist. Please try double-checking "
                                    + "the recipient's email address for typos or unnecessary spaces.", "second line"])
        let expired = SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 4, 7), "delivery time expired (bounce-after)")
        return DeliveryStatusReport(
            reportingMTA: "mta.peregrine.test", from: "MAILER-DAEMON@mta.peregrine.test", to: "sender@senders.test",
            envelopeID: envid, arrivalDate: 1_796_472_000,
            recipients: [
                .init(finalRecipient: "bad@dest.test", originalRecipient: "rfc822;Bad+Orig@dest.test", action: .failed,
                      reply: bad, remoteMTA: "mx.dest.test", lastAttempt: 1_796_472_060),
                .init(finalRecipient: "slow@dest.test", originalRecipient: nil, action: .failed, reply: expired,
                      remoteMTA: nil, lastAttempt: 1_796_472_100),
            ], ret: ret)
    }

    static func parse(_ bytes: [UInt8]) throws -> [String: Any] {
        let python = try #require(findTool("python3"), "python3 is needed to read the report independently")
        let script = #"""
        import sys, json, email, email.policy
        raw = open(sys.argv[1], "rb").read()
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts = msg.get_payload()
        status = parts[1].get_payload()
        returned = parts[2]
        out = {"type": msg.get_content_type(), "report_type": msg.get_param("report-type"),
               "parts": [p.get_content_type() for p in parts],
               "per_message": dict(status[0].items()),
               "per_recipient": [dict((k, " ".join(v.split())) for k, v in r.items()) for r in status[1:]],
               "defects": [str(d) for p in [msg] + parts for d in p.defects],
               "date": msg["Date"], "auto_submitted": msg["Auto-Submitted"]}
        if returned.get_content_type() == "message/rfc822":
            inner = returned.get_payload()[0]
            out["returned_subject"] = inner["Subject"]; out["returned_body"] = inner.get_payload()
        else:
            text = returned.get_payload()
            out["returned_subject"] = email.message_from_string(text)["Subject"]
            out["returned_body"] = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else ""
        print(json.dumps(out))
        """#
        let dir = NSTemporaryDirectory() + "dsn-report-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try script.write(toFile: dir + "/parse.py", atomically: true, encoding: .utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/report.eml"))
        let (status, output) = runTool(python, [dir + "/parse.py", dir + "/report.eml"], seconds: 30)
        guard status == 0, let line = output.split(separator: "\n").last,
              let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw SinkTestLikeError("python could not read the report (\(status)): \(output)")
        }
        return o
    }

    @Test(arguments: [DSNReturn.unspecified, .headers, .full])
    func reportReadsBackWithPythonsEmailPackage(_ ret: DSNReturn) throws {
        let bytes = Self.original.utf8.withContiguousStorageIfAvailable { original in
            Self.report(ret: ret).render(original: UnsafeRawBufferPointer(original), messageID: "r1.dsn@mta.peregrine.test",
                                         date: 1_796_472_160)
        }!
        // Every line ends in CRLF and none is longer than SMTP allows.
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(!text.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        #expect(text.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 998 })

        let o = try Self.parse(bytes)
        #expect(o["type"] as? String == "multipart/report")
        #expect(o["report_type"] as? String == "delivery-status")
        #expect(o["defects"] as? [String] == [])
        #expect(o["date"] as? String == "Sat, 5 Dec 2026 12:02:40 +0000")
        #expect(o["auto_submitted"] as? String == "auto-replied")
        let parts = o["parts"] as? [String] ?? []
        #expect(parts == ["text/plain", "message/delivery-status", ret == .full ? "message/rfc822" : "text/rfc822-headers"])
        let perMessage = o["per_message"] as? [String: String] ?? [:]
        #expect(perMessage["Reporting-MTA"] == "dns; mta.peregrine.test")
        // xtext: the space and the '+' of the ENVID cannot appear as themselves.
        #expect(perMessage["Original-Envelope-Id"] == "ENV+2042+2Bx")
        #expect(perMessage["Arrival-Date"] == "Sat, 5 Dec 2026 12:00:00 +0000")
        let rcpts = o["per_recipient"] as? [[String: String]] ?? []
        try #require(rcpts.count == 2)
        #expect(rcpts[0]["Final-Recipient"] == "rfc822; bad@dest.test")
        #expect(rcpts[0]["Original-Recipient"] == "rfc822;Bad+2BOrig@dest.test")
        #expect(rcpts[0]["Action"] == "failed")
        #expect(rcpts[0]["Status"] == "5.1.1")
        #expect(rcpts[0]["Remote-MTA"] == "dns; mx.dest.test")
        #expect(rcpts[0]["Diagnostic-Code"] == "smtp; 550 5.1.1 The email account that you tried to reach does not exist. "
                + "Please try double-checking the recipient's email address for typos or unnecessary spaces. second line")
        #expect(rcpts[0]["Last-Attempt-Date"] == "Sat, 5 Dec 2026 12:01:00 +0000")
        #expect(rcpts[1]["Final-Recipient"] == "rfc822; slow@dest.test")
        #expect(rcpts[1]["Original-Recipient"] == nil)
        #expect(rcpts[1]["Status"] == "5.4.7")
        #expect(rcpts[1]["Remote-MTA"] == nil)
        #expect(o["returned_subject"] as? String == "the original")
        let body = o["returned_body"] as? String ?? "?"
        if ret == .full {
            #expect(body == "Line one of the body.\r\n..a line that was dot-stuffed\r\n")
        } else {
            #expect(body == "")
        }
    }

    @Test func noEnvelopeIDMeansNoField() throws {
        let bytes = Array("Subject: s\r\n\r\nb\r\n".utf8).withUnsafeBytes {
            Self.report(ret: .headers, envid: nil).render(original: $0, messageID: "r2@x", date: 0)
        }
        let perMessage = try Self.parse(bytes)["per_message"] as? [String: String] ?? [:]
        #expect(perMessage["Original-Envelope-Id"] == nil)
        #expect(perMessage["Reporting-MTA"] == "dns; mta.peregrine.test")
    }

    @Test func headerSectionEndsAtTheFirstBlankLine() {
        func headers(_ s: String) -> String {
            Array(s.utf8).withUnsafeBytes { String(decoding: DeliveryStatusReport.headerSection(of: $0), as: UTF8.self) }
        }
        #expect(headers("A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == "A: 1\r\nB: 2\r\n\r\n")
        #expect(headers("A: 1\r\n") == "A: 1\r\n")
        #expect(headers("\r\nbody") == "\r\n")
        #expect(headers("A: 1\n\nbody") == "A: 1\n\n")
    }

    /// RFC 3461 §4.1 and the never-bounce-a-bounce rule, every combination.
    @Test func whichOutcomesGetAReport() {
        let sender = "s@senders.test"
        // No NOTIFY: failures (and delays) are reported, successes are not.
        #expect(DSNGenerator<EpollLoop>.isDue(.failed, notify: [], sender: sender, deliverLocalDSN: true))
        #expect(DSNGenerator<EpollLoop>.isDue(.delayed, notify: [], sender: sender, deliverLocalDSN: true))
        #expect(!DSNGenerator<EpollLoop>.isDue(.relayed, notify: [], sender: sender, deliverLocalDSN: true))
        // NEVER: nothing.
        for a in [DeliveryStatusReport.Action.failed, .delayed, .relayed] {
            #expect(!DSNGenerator<EpollLoop>.isDue(a, notify: .never, sender: sender, deliverLocalDSN: true))
        }
        // SUCCESS only: successes, not failures.
        #expect(DSNGenerator<EpollLoop>.isDue(.relayed, notify: .success, sender: sender, deliverLocalDSN: true))
        #expect(!DSNGenerator<EpollLoop>.isDue(.failed, notify: .success, sender: sender, deliverLocalDSN: true))
        // FAILURE only: failures, not delays.
        #expect(DSNGenerator<EpollLoop>.isDue(.failed, notify: .failure, sender: sender, deliverLocalDSN: true))
        #expect(!DSNGenerator<EpollLoop>.isDue(.delayed, notify: .failure, sender: sender, deliverLocalDSN: true))
        #expect(DSNGenerator<EpollLoop>.isDue(.delayed, notify: [.delay, .success], sender: sender, deliverLocalDSN: true))
        // The null sender, and senders with nowhere to send to, never get one.
        for s in ["", "postmaster", "@senders.test", "user@"] {
            #expect(!DSNGenerator<EpollLoop>.isDue(.failed, notify: [], sender: s, deliverLocalDSN: true), "\(s)")
        }
        // deliver-local-dsn no: none at all.
        #expect(!DSNGenerator<EpollLoop>.isDue(.failed, notify: .failure, sender: sender, deliverLocalDSN: false))
    }
}

@Suite struct DSNConfigTests {
    @Test func deliverLocalDSNAndTheSenderRateParse() throws {
        let c = try PeregrineConfig.parse("""
            dsn-max-rate-per-sender 10/m
            <domain *>
                deliver-local-dsn no
            </domain>
            <domain b.test>
                deliver-local-dsn yes
            </domain>
            """, file: "t.conf")
        #expect(c.dsnMaxRatePerSender == .limited(count: 10, per: .seconds(60)))
        #expect(c.settings(forDomain: "a.test", vmta: "default").deliverLocalDSN == false)
        #expect(c.settings(forDomain: "b.test", vmta: "default").deliverLocalDSN == true)
        #expect(try PeregrineConfig.parse("", file: "t.conf").settings(forDomain: "a.test", vmta: "default").deliverLocalDSN)
    }

    @Test func badValuesAreRefusedWithTheLine() {
        for (text, line) in [("\n<domain *>\n    deliver-local-dsn maybe\n</domain>", 3), ("dsn-max-rate-per-sender lots", 1)] {
            do {
                _ = try PeregrineConfig.parse(text, file: "t.conf")
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".hasPrefix("t.conf:\(line):"), "\(error)")
            }
        }
    }

    @Test func burstNeverExceedsTheRate() {
        #expect(DSNGenerator<EpollLoop>.burst(of: .limited(count: 2, per: .seconds(3600))) == 2)
        #expect(DSNGenerator<EpollLoop>.burst(of: .limited(count: 1000, per: .seconds(3600))) == 20)
    }
}

struct SinkTestLikeError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
