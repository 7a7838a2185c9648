#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// Per-tenant suppression (issue 16) end to end, per backend: `ctl suppress
/// add --tenant` scopes an entry to one tenant; an `<api-key>` with `tenant`
/// (or a request's `tenant` field) says whose mail a call is. One tenant's
/// suppressed address still goes through for another tenant; a global entry
/// applies to both; SMTP injection (no tenant) sees only global entries; the
/// scoped entries replay from the log after a restart and after a SIGKILL
/// right after an acknowledged remove. Scenario number 54.
@Suite(.timeLimit(.minutes(5)), .blockingIO) struct DaemonSuppressionTenantTests {
    /// POSTs one message as KEY (optionally with a "tenant" field) and prints {"status", "body"}.
    static let postScript = #"""
    import json, sys, urllib.request, urllib.error
    host, secret, key, tenant = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    body = {"sender": "news@senders.test", "recipients": sys.argv[5:], "raw": "From: news@senders.test\nSubject: t\n\nhello\n"}
    if tenant != "-":
        body["tenant"] = tenant
    req = urllib.request.Request("http://%s:8080/api/v1/messages" % host, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer %s:%s" % (key, secret)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "body": json.loads(e.read() or b"null")}))
    """#

    static let smtpScript = #"""
    import json, smtplib, sys
    host, port = sys.argv[1], int(sys.argv[2])
    with smtplib.SMTP(host, port, timeout=30) as s:
        refused = s.sendmail("news@senders.test", sys.argv[3:], b"From: news@senders.test\r\nSubject: t\r\n\r\nhi\r\n")
    print(json.dumps({k: v[0] for k, v in refused.items()}))
    """#

    @Test(arguments: BackendKind.testable)
    func tenantEntriesStopOnlyTheirTenantAndReplayAfterRestart(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        try #require(DaemonHTTPInjectionTests.keyHash.hasPrefix("$pbkdf2-sha256$"), "peregrine passwd failed")
        let dir = try TestDirectory("supp-tenant-\(kind.rawValue)")
        let ip = E2E.ip(54, kind, host: 9)
        let hash = DaemonHTTPInjectionTests.keyHash
        let configPath = try dir.write("peregrine.conf", daemonConfig(dir, listen: ip, """
            http-injection-listener \(ip):8080
            <api-key acme>
                key-hash \(hash)
                tenant acme
            </api-key>
            <api-key globex>
                key-hash \(hash)
                tenant globex
            </api-key>
            <api-key free>
                key-hash \(hash)
            </api-key>
            <domain t.test>
                route [\(E2E.ip(54, kind, host: 8))]:9
                retry-after 1h
            </domain>
            <domain blocked.test>
                route [\(E2E.ip(54, kind, host: 8))]:9
                retry-after 1h
            </domain>
            """))
        var daemon = try DaemonProcess(configPath: configPath, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        try #require(PrivateLoopback.waitForListener(ip, 8080), "the API listener did not come up: \(daemon.log.suffix(2000))")
        let post = try dir.write("post.py", Self.postScript), smtp = try dir.write("smtp.py", Self.smtpScript)

        /// recipient → "queued" or the rejection reason, for a call as `key`.
        func inject(_ key: String, tenant: String = "-", _ rcpts: [String]) throws -> (Int, [String: String]) {
            let r = E2E.run(python, [post, ip, DaemonHTTPInjectionTests.secret, key, tenant] + rcpts, timeout: 60)
            let out = try E2E.json(Data(r.stdout.utf8))
            var items: [String: String] = [:]
            for item in (out["body"] as? [String: Any])?["recipients"] as? [[String: Any]] ?? [] {
                guard let rcpt = item["recipient"] as? String else { continue }
                items[rcpt] = item["status"] as? String == "queued" ? "queued" : (item["reason"] as? String ?? "?")
            }
            if items.isEmpty, let e = (out["body"] as? [String: Any])?["error"] as? [String: Any] { items["error"] = e["code"] as? String }
            return (out["status"] as? Int ?? 0, items)
        }
        func ctl(_ args: [String]) throws -> [String: Any] { try daemon.ctl(["suppress"] + args) }

        #expect(try ctl(["add", "a@t.test", "--tenant", "acme"])["added"] as? Int == 1)
        #expect(try ctl(["add", "blocked.test", "--tenant", "globex"])["added"] as? Int == 1)
        #expect(try ctl(["add", "g@t.test"])["added"] as? Int == 1)
        // The same address again in another scope is another entry.
        #expect(try ctl(["add", "g@t.test", "--tenant", "acme"])["added"] as? Int == 1)

        let all = ["a@t.test", "g@t.test", "x@blocked.test", "ok@t.test"]
        let (s1, acme) = try inject("acme", all)
        #expect(s1 == 200)
        #expect(acme["a@t.test"]?.contains("recipient is suppressed (operator, tenant acme)") == true, "\(acme)")
        #expect(acme["g@t.test"]?.contains("recipient is suppressed") == true, "\(acme)")
        #expect(acme["x@blocked.test"] == "queued" && acme["ok@t.test"] == "queued", "\(acme)")
        let (s2, globex) = try inject("globex", all)
        #expect(s2 == 200)
        #expect(globex["a@t.test"] == "queued" && globex["ok@t.test"] == "queued", "\(globex)")
        #expect(globex["g@t.test"]?.contains("recipient is suppressed (operator)") == true, "\(globex)")
        #expect(globex["x@blocked.test"]?.contains("tenant globex") == true, "\(globex)")
        // A key without a tenant: the request's tenant field (any letter case); none: global entries only.
        let (_, freeAcme) = try inject("free", tenant: "ACME", ["A@t.test", "x@blocked.test"])
        #expect(freeAcme["A@t.test"]?.contains("tenant ACME") == true && freeAcme["x@blocked.test"] == "queued", "\(freeAcme)")
        let (_, freeNone) = try inject("free", ["a@t.test", "g@t.test"])
        #expect(freeNone["a@t.test"] == "queued" && freeNone["g@t.test"]?.contains("suppressed") == true, "\(freeNone)")
        // A key bound to a tenant may not send for another.
        let (s403, other) = try inject("acme", tenant: "globex", ["ok@t.test"])
        #expect(s403 == 403 && other["error"] == "tenant_not_allowed", "\(other)")
        // SMTP injection has no tenant: only the global entry refuses.
        let refused = E2E.run(python, [smtp, daemon.listenIP, "\(daemon.listenPort)", "a@t.test", "g@t.test", "x@blocked.test"], timeout: 60)
        #expect((try? E2E.json(Data(refused.stdout.utf8))).map { Set($0.keys) } == ["g@t.test"], "\(refused)")

        // ctl check and list in a scope.
        let checkAcme = try ctl(["check", "a@t.test", "--tenant", "acme"])
        #expect(checkAcme["suppressed"] as? Bool == true && checkAcme["scope"] as? String == "tenant", "\(checkAcme)")
        #expect(try ctl(["check", "a@t.test"])["suppressed"] as? Bool == false)
        #expect(try ctl(["check", "g@t.test", "--tenant", "globex"])["scope"] as? String == "global")
        let listAcme = (try ctl(["list", "--tenant", "acme"])["entries"] as? [[String: Any]] ?? [])
            .map { "\($0["tenant"] ?? "-") \($0["entry"] ?? "")" }
        #expect(listAcme == ["acme a@t.test", "acme g@t.test"], "\(listAcme)")
        let listAll = try ctl(["list"])
        #expect(listAll["count"] as? Int == 4, "\(listAll)")

        // A clean restart replays the log; then a remove in one scope, SIGKILL, restart.
        daemon.terminate()
        daemon = try DaemonProcess(configPath: configPath, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
        try #require(PrivateLoopback.waitForListener(ip, 8080), "the API listener did not come back: \(daemon.log.suffix(2000))")
        #expect(daemon.log.contains("4 entries loaded"), "\(daemon.log.suffix(2000))")
        let (_, again) = try inject("globex", ["a@t.test", "x@blocked.test"])
        #expect(again["a@t.test"] == "queued" && again["x@blocked.test"]?.contains("tenant globex") == true, "\(again)")
        #expect(try ctl(["remove", "a@t.test", "--tenant", "acme"])["removed"] as? Int == 1)
        daemon.crash()
        daemon = try DaemonProcess(configPath: configPath, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
        try #require(PrivateLoopback.waitForListener(ip, 8080), "the API listener did not come back: \(daemon.log.suffix(2000))")
        let (_, afterKill) = try inject("acme", ["a@t.test", "g@t.test"])
        #expect(afterKill["a@t.test"] == "queued" && afterKill["g@t.test"]?.contains("tenant acme") == true, "\(afterKill)")
        #expect(try ctl(["check", "x@blocked.test", "--tenant", "globex"])["suppressed"] as? Bool == true)
    }
}
