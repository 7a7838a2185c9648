#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// `<webhook>` end to end (issue 16, webhooks): a Python `http.server`
/// receiver checks every POST's HMAC signature and records the events by id.
/// Scenarios 30 (outage + SIGKILL), 31 (https, 500 then 200, untrusted CA),
/// 32 (webhook-max-age). Addresses 127.P.3x.y.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonWebhookTests {
    static let secret = "whsec-test-0123"

    func webhookConfig(_ dir: TestDirectory, listen: String, mx: String, mxPort: UInt16, _ hooks: String,
                       extra: String = "") -> String {
        daemonConfig(dir, listen: listen, """
            <domain dest.test>
                route [\(mx)]:\(mxPort)
            </domain>
            <acct-file \(dir.file("hooks.csv"))>
                records w
            </acct-file>
            \(extra)
            \(hooks)
            """)
    }

    func webhookStatus(_ d: DaemonProcess, _ name: String) -> [String: Any]? {
        let list = (try? d.ctl(["show", "webhooks"]))?["webhooks"] as? [[String: Any]]
        return list?.first { $0["name"] as? String == name }
    }

    /// The done-when scenario: the receiver is down while mail is injected
    /// and delivered, the daemon is SIGKILLed in the middle, and the receiver
    /// stays down until the restarted daemon has failed to reach it twice more
    /// (an outage of a few seconds: the issue's 30 s shortened for CI; what
    /// matters is that events wait through failures and a crash). Then every
    /// recipient's `injected` and `delivered` events arrive, `injected` first
    /// (duplicates allowed), every POST correctly signed.
    @Test(arguments: BackendKind.testable)
    func everyEventArrivesAfterAnOutageAndASIGKILL(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("webhook-crash-\(kind.rawValue)")
        let listen = E2E.ip(30, kind, host: 9), mx = E2E.ip(30, kind, host: 1), hookIP = E2E.ip(30, kind, host: 2)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("a", domains: "dest.test", mx: [mx]))
        defer { sink.terminate() }
        let (_, mxPort) = try sink.address("a")
        // Started once for its port, then stopped: the endpoint refuses connections.
        var receiver = try WebhookReceiver(dir, ip: hookIP, secret: Self.secret)
        let hookPort = receiver.port
        receiver.stop()
        let outageStart = Date()
        let config = webhookConfig(dir, listen: listen, mx: mx, mxPort: mxPort, """
            <webhook app>
                url http://\(hookIP):\(hookPort)/hooks/peregrine
                events injected,delivered,bounced
                secret "\(Self.secret)"
                max-batch-events 7
                max-batch-delay 100ms
                retry-initial-delay 100ms
                retry-max-delay 500ms
                timeout 5s
            </webhook>
            """)
        let configPath = try dir.write("peregrine.conf", config)
        var d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        let messages = 12
        var recipients: [String] = []
        for i in 0..<messages {
            let rcpts = ["u\(i)a@dest.test", "u\(i)b@dest.test"]
            #expect(try c.send(to: rcpts, id: "m\(i)") == nil)
            recipients += rcpts
        }
        c.quit()
        // Some outcomes recorded (their events are durable first), then the crash.
        let someDelivered = E2E.waitUntil(60) { accounting(dir.file("acct.csv")).of(.delivered).count >= 4 }
        #expect(someDelivered, "\(d.log.suffix(2000))")
        let failedBefore = E2E.waitUntil(30) { (webhookStatus(d, "app")?["failures"] as? Int ?? 0) >= 1 }
        #expect(failedBefore)
        d.crash()

        d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        let failedAfter = E2E.waitUntil(60) { (webhookStatus(d, "app")?["failures"] as? Int ?? 0) >= 2 }
        #expect(failedAfter, "the restarted daemon should be failing to reach the receiver: \(d.log.suffix(2000))")
        #expect(receiver.posts.isEmpty)
        // By hand, the issue's full outage: PEREGRINE_WEBHOOK_OUTAGE_SECONDS=30 keeps the receiver
        // down that long in all (CI leaves it unset: the outage ends after the failures above).
        let outage = ProcessInfo.processInfo.environment["PEREGRINE_WEBHOOK_OUTAGE_SECONDS"].flatMap(Double.init) ?? 0
        if outage > 0 { E2E.waitUntil(outage + 5, every: 0.5) { Date().timeIntervalSince(outageStart) >= outage } }
        let outageSeconds = Date().timeIntervalSince(outageStart)
        receiver = try WebhookReceiver(dir, ip: hookIP, port: hookPort, secret: Self.secret, tag: "hook")
        defer { receiver.stop() }
        let receiverBack = Date()

        func firstArrival(_ events: [[String: Any]]) -> [String: Int] {
            var first: [String: Int] = [:]
            for (i, e) in events.enumerated() {
                let key = "\(e["recipient"] as? String ?? "")|\(e["type"] as? String ?? "")"
                if first[key] == nil { first[key] = i }
            }
            return first
        }
        let complete = E2E.waitUntil(120, every: 0.2) {
            let first = firstArrival(receiver.acknowledgedEvents)
            return recipients.allSatisfy { first["\($0)|injected"] != nil && first["\($0)|delivered"] != nil }
        }
        let events = receiver.acknowledgedEvents
        let first = firstArrival(events)
        let missing = recipients.flatMap { r in ["injected", "delivered"].filter { first["\(r)|\($0)"] == nil }.map { "\(r) \($0)" } }
        #expect(complete && missing.isEmpty, "missing events: \(missing)\n\(d.log.suffix(3000))")
        for r in recipients {
            if let i = first["\(r)|injected"], let dl = first["\(r)|delivered"] {
                #expect(i < dl, "\(r): delivered (#\(dl)) arrived before injected (#\(i))")
            }
        }
        // One id per (recipient, type): duplicates are the same event again, never a new one.
        var ids: [String: Set<String>] = [:]
        for e in events { ids["\(e["recipient"] as? String ?? "")|\(e["type"] as? String ?? "")", default: []].insert(e["id"] as? String ?? "") }
        #expect(ids.values.allSatisfy { $0.count == 1 }, "\(ids.filter { $0.value.count != 1 })")
        #expect(receiver.posts.allSatisfy { $0.signatureOK }, "a POST with a bad signature")
        #expect(receiver.posts.allSatisfy { $0.events.count <= 7 }, "a batch over max-batch-events")
        let drained = E2E.waitUntil(30) { (webhookStatus(d, "app")?["backlog"] as? Int ?? -1) == 0 }
        #expect(drained, "\(String(describing: webhookStatus(d, "app")))")
        if outage > 0 {
            // The figures results/ records for the by-hand run.
            print("webhook-outage \(kind.rawValue): outage \(String(format: "%.1f", outageSeconds)) s with a SIGKILL, "
                  + "\(recipients.count * 2) events expected, \(events.count) acknowledged (\(events.count - first.count) duplicates), "
                  + "missing \(missing.count), POSTs \(receiver.posts.count) (all signed: \(receiver.posts.allSatisfy { $0.signatureOK })), "
                  + "complete \(String(format: "%.1f", Date().timeIntervalSince(receiverBack))) s after the receiver came back")
        }
    }

    /// https with a throwaway CA (the certificate names the receiver's IP):
    /// the endpoint answers 500 twice, then 200; the same events are POSTed
    /// again after each failure (backoff: failures counted, last error shown)
    /// and arrive once acknowledged. A second webhook on the same endpoint
    /// trusts another CA: it never POSTs, and says why.
    /// `/metrics` with webhooks passes promtool and holds the webhook families.
    @Test(arguments: BackendKind.testable)
    func httpsWithVerifiedCertificateRetriesAfter500(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let promtool = try #require(findTool("promtool"), "promtool is not installed (scripts/setup installs it)")
        let dir = try TestDirectory("webhook-https-\(kind.rawValue)")
        let listen = E2E.ip(31, kind, host: 9), mx = E2E.ip(31, kind, host: 1), hookIP = E2E.ip(31, kind, host: 2)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("a", domains: "dest.test", mx: [mx]))
        defer { sink.terminate() }
        let (_, mxPort) = try sink.address("a")
        let ca = try DaemonTLSVerifyHostnameTests.TestCA.make(dir)
        let cert = try ca.issue(dir, "hook", subject: hookIP, altNames: "IP:\(hookIP)")
        let otherDir = try TestDirectory("webhook-https-other-\(kind.rawValue)")
        let otherCA = try DaemonTLSVerifyHostnameTests.TestCA.make(otherDir)
        let receiver = try WebhookReceiver(dir, ip: hookIP, secret: Self.secret, failFirst: 2, certificate: cert)
        defer { receiver.stop() }
        let d = try DaemonProcess(configPath: try dir.write("peregrine.conf", webhookConfig(dir, listen: listen, mx: mx, mxPort: mxPort, """
            <webhook app>
                url https://\(hookIP):\(receiver.port)/events
                events delivered
                secret "\(Self.secret)"
                max-batch-delay 50ms
                retry-initial-delay 200ms
                tls-ca-file \(ca.ca)
            </webhook>
            <webhook untrusted>
                url https://\(hookIP):\(receiver.port)/events
                events delivered
                secret "\(Self.secret)"
                retry-initial-delay 200ms
                tls-ca-file \(otherCA.ca)
            </webhook>
            """)), backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        #expect(try c.send(to: ["one@dest.test"], id: "m1") == nil)
        c.quit()
        let arrived = E2E.waitUntil(60, every: 0.2) { !receiver.acknowledgedEvents.isEmpty }
        #expect(arrived, "\(d.log.suffix(2000))")
        let posts = receiver.posts
        #expect(posts.count >= 3 && posts.prefix(2).allSatisfy { $0.status == 500 } && posts[2].status == 200,
                "\(posts.map(\.status))")
        let ids = posts.prefix(3).map { $0.events.compactMap { $0["id"] as? String } }
        #expect(ids.count == 3 && ids[0] == ids[1] && ids[1] == ids[2], "the same batch is retried: \(ids)")
        #expect(receiver.acknowledgedEvents.first?["type"] as? String == "delivered")
        #expect(receiver.acknowledgedEvents.first?["recipient"] as? String == "one@dest.test")
        #expect(posts.allSatisfy { $0.signatureOK })
        let app = try #require(webhookStatus(d, "app"))
        #expect((app["failures"] as? Int ?? 0) >= 2 && app["lastError"] as? String == "HTTP 500", "\(app)")
        let refused = E2E.waitUntil(30) {
            let u = webhookStatus(d, "untrusted")
            return (u?["failures"] as? Int ?? 0) >= 1 && (u?["lastError"] as? String ?? "").contains("certificate")
        }
        #expect(refused, "\(String(describing: webhookStatus(d, "untrusted")))")
        #expect((webhookStatus(d, "untrusted")?["sent"] as? Int) == 0)

        let text = String(decoding: try E2E.httpGet(d.management, "/metrics"), as: UTF8.self)
        let (lintStatus, lint) = runTool(promtool, ["check", "metrics"], stdin: text, seconds: 60)
        #expect(lintStatus == 0 && lint.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "promtool: \(lint)")
        let families = try DaemonMetricsTests.parse(text).map(\.name)
        for name in ["peregrine_webhook_backlog_events", "peregrine_webhook_oldest_pending_age_seconds",
                     "peregrine_webhook_events_sent", "peregrine_webhook_failures", "peregrine_webhook_events_expired",
                     "peregrine_webhook_log_events_written", "peregrine_webhook_log_bytes"] {
            #expect(families.contains(name), "\(name) missing from /metrics")
        }
    }

    /// (Injected events only: they do not depend on how fast the sink
    /// delivers, which under a loaded CI machine took longer than the wait.)
    /// An event the endpoint never acknowledges within webhook-max-age is
    /// written to accounting as a `w` record (webhook name, event id and type,
    /// last error) and passed; events after it are delivered once the
    /// endpoint is back, the expired ones not.
    @Test(arguments: BackendKind.testable)
    func eventsOlderThanMaxAgeBecomeAccountingRecords(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("webhook-maxage-\(kind.rawValue)")
        let listen = E2E.ip(32, kind, host: 9), mx = E2E.ip(32, kind, host: 1), hookIP = E2E.ip(32, kind, host: 2)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("a", domains: "dest.test", mx: [mx]))
        defer { sink.terminate() }
        let (_, mxPort) = try sink.address("a")
        var receiver = try WebhookReceiver(dir, ip: hookIP, secret: Self.secret)
        let hookPort = receiver.port
        receiver.stop()
        let d = try DaemonProcess(configPath: try dir.write("peregrine.conf", webhookConfig(dir, listen: listen, mx: mx, mxPort: mxPort, """
            <webhook app>
                url http://\(hookIP):\(hookPort)/h
                events injected
                secret "\(Self.secret)"
                max-batch-delay 10ms
                retry-initial-delay 100ms
                retry-max-delay 200ms
            </webhook>
            """, extra: "webhook-max-age 2s")), backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        #expect(try c.send(to: ["old@dest.test"], id: "m1") == nil)
        let expired = E2E.waitUntil(60, every: 0.2) { accounting(dir.file("hooks.csv")).of(.webhookUndeliverable).count >= 1 }
        let w = accounting(dir.file("hooks.csv")).of(.webhookUndeliverable)
        #expect(expired, "\(w)\n\(d.log.suffix(2000))")
        #expect(Set(w.map(\.rcpt)) == ["old@dest.test"])
        #expect(w.allSatisfy { $0.dsnMta == "app" && $0.bounceCat == "webhook-undeliverable" && $0.dsnAction == "failed" })
        #expect(Set(w.map { $0.envId.split(separator: ".").last.map(String.init) ?? "" }) == ["injected"], "\(w.map(\.envId))")
        #expect(w.allSatisfy { $0.dsnDiag.contains("last error:") && $0.dsnDiag.contains("refused") }, "\(w.map(\.dsnDiag))")
        #expect((webhookStatus(d, "app")?["expired"] as? Int ?? 0) >= 1)

        receiver = try WebhookReceiver(dir, ip: hookIP, port: hookPort, secret: Self.secret)
        defer { receiver.stop() }
        #expect(try c.send(to: ["new@dest.test"], id: "m2") == nil)
        c.quit()
        let arrived = E2E.waitUntil(60, every: 0.2) {
            receiver.acknowledgedEvents.contains { $0["recipient"] as? String == "new@dest.test" }
        }
        #expect(arrived, "\(d.log.suffix(2000))")
        #expect(!receiver.acknowledgedEvents.contains { $0["recipient"] as? String == "old@dest.test" })
    }
}
