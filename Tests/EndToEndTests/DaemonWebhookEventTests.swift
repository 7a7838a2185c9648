#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// Every outcome type of `<webhook>` end to end (issue 16), one daemon per
/// backend: a receiver that answers 550 (bounced), 450 until bounce-after
/// (deferred, then expired), 250 (delivered); an ARF complaint and an RFC 3464
/// bounce sent by Python's smtplib to the feedback-loop and bounce processors
/// (complaint, async-bounce). Each event must arrive at the Python
/// `http.server` receiver in a correctly signed POST with the documented
/// fields (WebhookEvent: id, type, time, recipient, sender, and status,
/// diagnostic, category where the outcome has them), agreeing with its
/// accounting record. Scenario 49 (RecordingReceiver: `bad…` get 550 5.1.1,
/// `slow…` 450 4.2.1).
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonWebhookEventTests {
    static let secret = "whsec-events-42"

    @Test(arguments: BackendKind.testable)
    func everyOutcomeTypeArrivesSignedWithItsFields(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let s = try DaemonDSNTests.Scenario("webhook-events", 49, kind)
        let receiver = try WebhookReceiver(s.dir, ip: E2E.ip(49, kind, host: 2), secret: Self.secret)
        defer { receiver.stop() }
        let started = Int(Date().timeIntervalSince1970)
        let d = try s.start("""
            <webhook app>
                url http://\(E2E.ip(49, kind, host: 2)):\(receiver.port)/hooks
                events delivered,bounced,deferred,expired,complaint,async-bounce
                secret "\(Self.secret)"
                max-batch-delay 50ms
                retry-initial-delay 100ms
            </webhook>
            \(ReportProcessors.config)
            <domain dest.test>
                ROUTE
                retry-after 1s
                bounce-after 3s
            </domain>
            """)
        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("ok@dest.test", ""), ("bad-one@dest.test", ""), ("slow@dest.test", "")],
                             subject: "outcomes") == nil)
        let arf = try s.dir.write("send-report.py", DaemonInboundReportTests.sendScript)
        let dsn = try s.dir.write("send-dsn.py", DaemonSuppressionReportTests.dsnScript)
        var r = E2E.run(python, [arf, d.listenIP, "\(d.listenPort)", "arf", "fbl@fbl.peregrine.test"], timeout: 60)
        #expect(r.status == 0 && r.stdout.contains("sent"), "\(r.stderr)")
        r = E2E.run(python, [dsn, d.listenIP, "\(d.listenPort)", "bounces-dsn@bounce.peregrine.test"], timeout: 60)
        #expect(r.status == 0 && r.stdout.contains("sent"), "\(r.stderr)")

        let wanted: [(String, String)] = [("delivered", "ok@dest.test"), ("bounced", "bad-one@dest.test"), ("deferred", "slow@dest.test"),
                                          ("expired", "slow@dest.test"), ("complaint", "reader@isp.test"),
                                          ("async-bounce", "gone@remote.test")]
        func event(_ type: String, _ rcpt: String) -> [String: Any]? {
            receiver.acknowledgedEvents.first { $0["type"] as? String == type && $0["recipient"] as? String == rcpt }
        }
        let all = E2E.waitUntil(90, every: 0.2) { wanted.allSatisfy { event($0.0, $0.1) != nil } }
        let missing = wanted.filter { event($0.0, $0.1) == nil }.map { "\($0.0) \($0.1)" }
        try #require(all, "\(kind): missing \(missing); got \(receiver.acknowledgedEvents)\n\(s.diagnostics)")
        #expect(receiver.posts.allSatisfy { $0.signatureOK }, "a POST with a bad signature")

        let now = Int(Date().timeIntervalSince1970)
        for (type, rcpt) in wanted {
            guard let e = event(type, rcpt) else { continue }
            let id = e["id"] as? String ?? ""
            #expect(!id.isEmpty && id.contains(type), "\(type): id \(id)")
            let time = e["time"] as? Int ?? 0
            #expect(time >= started - 1 && time <= now + 1, "\(type): time \(time) not within the run")
            #expect(e["sender"] is String, "\(type): no sender: \(e)")
        }
        // Final outcomes agree with their accounting records, field by field.
        try #require(E2E.waitUntil(30, every: 0.1) {
            let rec = s.records
            return rec.contains { $0.type == .bounced && $0.rcpt == "slow@dest.test" } && rec.contains { $0.type == .bounced && $0.rcpt == "bad-one@dest.test" }
                && rec.of(.feedbackLoop).count >= 1 && rec.of(.remoteBounce).count >= 1
        }, "\(s.diagnostics)")
        let records = s.records
        func status(_ r: AccountingRecord) -> String { String(r.dsnStatus.prefix { $0 != " " }) }
        let finals: [(String, String, AccountingRecordType)] = [("bounced", "bad-one@dest.test", .bounced),
                                                                ("expired", "slow@dest.test", .bounced),
                                                                ("complaint", "reader@isp.test", .feedbackLoop),
                                                                ("async-bounce", "gone@remote.test", .remoteBounce)]
        for (type, rcpt, recordType) in finals {
            guard let e = event(type, rcpt),
                  let rec = records.first(where: { $0.type == recordType && $0.rcpt == rcpt }) else {
                Issue.record("\(type): no event or no record"); continue
            }
            #expect(e["category"] as? String == rec.bounceCat, "\(type): \(e) vs \(rec.bounceCat)")
            #expect(e["sender"] as? String == rec.orig, "\(type): \(e) vs \(rec.orig)")
            if !rec.dsnStatus.isEmpty { #expect(e["status"] as? String == status(rec), "\(type): \(e) vs \(rec.dsnStatus)") }
            #expect(e["diagnostic"] as? String == rec.dsnDiag, "\(type): \(e) vs \(rec.dsnDiag)")
            #expect(e["job_id"] as? String ?? "" == rec.jobId, "\(type): \(e) vs job \(rec.jobId)")
        }
        let bounced = try #require(event("bounced", "bad-one@dest.test"))
        #expect(bounced["status"] as? String == "5.1.1" && bounced["category"] as? String == "bad-mailbox", "\(bounced)")
        #expect(bounced["message_id"] is String && bounced["vmta"] as? String == "vmta1", "\(bounced)")
        let expired = try #require(event("expired", "slow@dest.test"))
        #expect(expired["category"] as? String == "message-expired", "\(expired)")
        let deferred = try #require(event("deferred", "slow@dest.test"))
        #expect(deferred["status"] as? String == "4.2.1" && (deferred["diagnostic"] as? String ?? "").contains("450"), "\(deferred)")
        #expect(deferred["message_id"] as? String == expired["message_id"] as? String, "\(deferred) vs \(expired)")
        let delivered = try #require(event("delivered", "ok@dest.test"))
        #expect(delivered["message_id"] as? String == bounced["message_id"] as? String, "one message, one id: \(delivered)")
        let complaint = try #require(event("complaint", "reader@isp.test"))
        #expect(complaint["category"] as? String == "abuse" && complaint["job_id"] as? String == "fbljob", "\(complaint)")
        let asyncBounce = try #require(event("async-bounce", "gone@remote.test"))
        #expect(asyncBounce["status"] as? String == "5.1.1" && asyncBounce["category"] as? String == "bad-mailbox", "\(asyncBounce)")
        // Order per message: the deferral of slow@ before its expiry.
        let events = receiver.acknowledgedEvents
        let firstDeferred = events.firstIndex { $0["type"] as? String == "deferred" && $0["recipient"] as? String == "slow@dest.test" }
        let firstExpired = events.firstIndex { $0["type"] as? String == "expired" && $0["recipient"] as? String == "slow@dest.test" }
        #expect((firstDeferred ?? .max) < (firstExpired ?? .min), "deferred #\(String(describing: firstDeferred)) after expired #\(String(describing: firstExpired))")
    }

    /// `ctl reload` with changed `<webhook>` blocks (scenario 50): an
    /// unchanged webhook keeps running and sends nothing again; a changed one
    /// (new url, secret and events) POSTs the next events to the new endpoint,
    /// signed with the new secret, from its kept cursor; a removed one sends
    /// nothing more and its cursor file is deleted; an added one gets the
    /// events from the reload on, not the earlier ones.
    @Test(arguments: BackendKind.testable)
    func reloadAppliesWebhookChangesAndKeepsCursors(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonDSNTests.Scenario("webhook-reload", 50, kind)
        let hookIP = E2E.ip(50, kind, host: 2), otherIP = E2E.ip(50, kind, host: 3)
        let newSecret = "whsec-after-reload"
        let r1 = try WebhookReceiver(s.dir, ip: hookIP, secret: Self.secret, tag: "r1")
        defer { r1.stop() }
        let r2 = try WebhookReceiver(s.dir, ip: otherIP, secret: newSecret, tag: "r2")
        defer { r2.stop() }
        func hook(_ name: String, _ url: String, _ events: String, _ secret: String) -> String {
            """
            <webhook \(name)>
                url \(url)
                events \(events)
                secret "\(secret)"
                max-batch-delay 20ms
                retry-initial-delay 100ms
            </webhook>

            """
        }
        let url1 = "http://\(hookIP):\(r1.port)/h", url2 = "http://\(otherIP):\(r2.port)/h"
        let before = hook("keep", url1, "injected", Self.secret) + hook("change", url1, "injected", Self.secret)
            + hook("gone", url1, "injected", Self.secret)
        let d = try s.start(before + "<domain dest.test>\n    ROUTE\n</domain>\n")
        func count(_ r: WebhookReceiver, _ hook: String, _ rcpt: String, _ type: String = "injected") -> Int {
            r.posts.filter { $0.status == 200 && $0.webhook == hook }.flatMap(\.events)
                .filter { $0["recipient"] as? String == rcpt && $0["type"] as? String == type }.count
        }
        func names() -> [String] {
            (((try? d.ctl(["show", "webhooks"]))?["webhooks"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }.sorted()
        }
        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("ok-1@dest.test", "")], subject: "first") == nil)
        try #require(E2E.waitUntil(60, every: 0.1) { ["keep", "change", "gone"].allSatisfy { count(r1, $0, "ok-1@dest.test") >= 1 } },
                     "\(kind): \(r1.posts.map(\.webhook))\n\(s.diagnostics)")

        let configPath = s.dir.file("peregrine.conf")
        let config = try String(contentsOfFile: configPath, encoding: .utf8)
        let after = hook("keep", url1, "injected", Self.secret) + hook("change", url2, "injected,delivered", newSecret)
            + hook("added", url1, "injected", Self.secret)
        try #require(config.contains(before))
        try config.replacingOccurrences(of: before, with: after).write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect((try d.ctl(["reload"])["reloaded"] as? Bool) == true)
        // The senders are swapped on a thread of their own: wait until the list is the new one.
        #expect(E2E.waitUntil(30, every: 0.1) { names() == ["added", "change", "keep"] }, "\(names())\n\(d.log.suffix(2000))")
        #expect(!FileManager.default.fileExists(atPath: s.dir.file("spool") + "/webhook-events/cursor-gone"))

        #expect(try s.inject(from: DaemonDSNTests.sender, rcpts: [("ok-2@dest.test", "")], subject: "second") == nil)
        let arrived = E2E.waitUntil(60, every: 0.1) {
            count(r1, "keep", "ok-2@dest.test") >= 1 && count(r1, "added", "ok-2@dest.test") >= 1
                && count(r2, "change", "ok-2@dest.test") >= 1 && count(r2, "change", "ok-2@dest.test", "delivered") >= 1
        }
        #expect(arrived, "\(kind): r1 \(r1.posts.map(\.webhook)) r2 \(r2.posts.map(\.webhook))\n\(d.log.suffix(3000))")
        #expect(count(r1, "keep", "ok-1@dest.test") == 1, "the unchanged webhook sent its old events again")
        #expect(count(r1, "added", "ok-1@dest.test") == 0, "the added webhook got events from before the reload")
        #expect(count(r2, "change", "ok-1@dest.test") == 0, "the changed webhook lost its cursor")
        #expect(count(r1, "change", "ok-2@dest.test") == 0, "the changed webhook still POSTs to its old url")
        // The removed webhook is stopped: a fence event of the kept one after ok-2 shows nothing of gone's arrived.
        #expect(count(r1, "gone", "ok-2@dest.test") == 0, "the removed webhook still sends")
        #expect(r1.posts.allSatisfy { $0.signatureOK } && r2.posts.allSatisfy { $0.signatureOK }, "a POST with a bad signature")
        #expect(!r2.posts.isEmpty && r2.posts.allSatisfy { $0.status == 200 }, "\(r2.posts.map(\.status))")
        #expect(d.log.contains("change changed on reload") && d.log.contains("added added on reload")
                && d.log.contains("gone removed on reload"), "\(d.log.suffix(2000))")
    }
}
