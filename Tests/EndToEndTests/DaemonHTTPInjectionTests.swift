#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// The HTTP injection API end to end (issue 16), per backend: the real
/// `peregrine run`, Python urllib/http.client and curl as clients, a Python
/// SMTP receiver capturing what the daemon delivers, and Python's `email`
/// package reading it back (attachments byte-identical, UTF-8 subject
/// decoded, substitutions applied). Every bad-input case gets its documented
/// status and code and queues nothing (checked in the accounting file); a
/// client trickling its body is closed while others are served.
/// Scenario numbers 20-29 (this suite uses 20).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonHTTPInjectionTests {
    static let secret = "s3cret-key"
    /// The key's hash as `peregrine passwd` prints it (lowest accepted cost).
    static let keyHash: String = {
        let out = runTool(E2E.executable("peregrine"), ["passwd", "--iterations", "100000"], stdin: secret + "\n", seconds: 60)
        return out.1.split(separator: "\n").first { $0.hasPrefix("password-hash ") }.map { String($0.dropFirst(14)) } ?? "unset"
    }()

    /// Requests and checks driven from Python; prints one JSON object per case.
    static let clientScript = #"""
    import base64, http.client, json, socket, sys, time, urllib.request, urllib.error
    host, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    url = "http://%s:%d/api/v1/messages" % (host, port)
    auth = "Bearer shop:" + secret
    attachment = bytes((i * 7 + 3) % 256 for i in range(70000))
    def post(body, headers=None, raw=False):
        data = body if raw else json.dumps(body).encode()
        h = {"Content-Type": "application/json", "Authorization": auth}
        h.update(headers or {})
        req = urllib.request.Request(url, data=data, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read() or b"null")
    seen = []
    def report(name, result):
        status, headers, body = result
        seen.append((name, status, body))
        print(json.dumps({"case": name, "status": status, "retry_after": headers.get("Retry-After"), "body": body}), flush=True)

    good = {"sender": "bounce@shop.example",
            "recipients": [{"email": "alice@api.test", "substitutions": {"name": "Alice"}},
                           {"email": "bob@api.test", "substitutions": {"name": "Bøb"}}],
            "content": {"from": "Zoë Shop <news@shop.example>", "subject": "Grüße {{name}} — 日本語",
                        "text": "Hello {{name}}\n" + "long line " * 300 + "\n.dot line\n",
                        "html": "<p>Hello {{name}}</p>",
                        "headers": {"X-Note": "naïve"},
                        "attachments": [{"filename": "data.bin", "content": base64.b64encode(attachment).decode()},
                                        {"filename": "résumé.txt", "content_type": "text/plain",
                                         "content": base64.b64encode(b"plain text\n").decode()}]},
            "job_id": "job-42", "campaign": "spring"}
    report("structured", post(good))

    # http.client, keep-alive: a raw message, then a 1,000-recipient batch on the same connection.
    conn = http.client.HTTPConnection(host, port, timeout=60)
    raw = "From: news@shop.example\nTo: list@api.test\nSubject: raw one\n\nraw body\n"
    for name, body in [("raw", {"sender": "bounce@shop.example", "recipients": ["raw@api.test"], "raw": raw, "dkim": False}),
                       ("batch", {"sender": "bounce@shop.example",
                                  "recipients": ["b%04d@api.test" % i for i in range(1000)], "raw": raw.replace("raw one", "batch")})]:
        conn.request("POST", "/api/v1/messages", body=json.dumps(body), headers={"Content-Type": "application/json", "Authorization": auth})
        r = conn.getresponse()
        report(name, (r.status, dict(r.getheaders()), json.loads(r.read())))
    conn.close()

    # Bad input: each answer, and nothing queued (the recipients are bad-*@api.test).
    def base(i):
        return {"sender": "bounce@shop.example", "recipients": ["bad-%d@api.test" % i],
                "content": {"from": "news@shop.example", "text": "x"}}
    report("bad_json", post(b'{"sender": "a@b", "recipients": [1,,]}', raw=True))
    report("no_auth", post(base(1), headers={"Authorization": ""}))
    report("wrong_key", post(base(2), headers={"Authorization": "Bearer shop:wrong"}))
    b = base(3); b["sender"] = "x@elsewhere.example"; report("sender_domain", post(b))
    b = base(4); b["recipients"] = ["bad-4@api.test", "not an address"]; report("bad_address", post(b))
    b = base(5); b["content"]["attachments"] = [{"filename": "a", "content": "%%%"}]; report("bad_base64", post(b))
    b = base(6); b["recipients"] = "bad-6@api.test"; report("wrong_type", post(b))
    b = base(7); del b["content"]["from"]; report("missing_field", post(b))
    b = base(8); b["content"]["text"] = "x" * 300000; report("message_too_large", post(b))
    # Over http-injection-max-request-size: answered from the head alone, the body never sent.
    big = http.client.HTTPConnection(host, port, timeout=60)
    big.putrequest("POST", "/api/v1/messages")
    for k, v in [("Content-Type", "application/json"), ("Authorization", auth), ("Content-Length", "3000000")]:
        big.putheader(k, v)
    big.endheaders()
    r = big.getresponse()
    report("request_too_large", (r.status, dict(r.getheaders()), json.loads(r.read())))
    big.close()
    b = base(9); report("media_type", post(b, headers={"Content-Type": "text/plain"}))
    b = base(10); b["recipients"] = ["bad-10@api.test", {"email": "bad-11@api.test", "substitutions": {"x": "y"}}]
    b["content"]["attachments"] = [{"filename": "ok", "content": "aGk="}, {"filename": "bad", "content": "!"}]
    report("second_item_bad", post(b))
    b = base(12); b["virtual_mta"] = "nowhere"; report("unknown_vmta", post(b))
    # The rate-limited key: the first call passes, the second gets 429 with Retry-After.
    report("rate_first", post({"sender": "bounce@shop.example", "recipients": ["rated-1@api.test"],
                               "content": {"from": "news@shop.example", "text": "x"}}, headers={"Authorization": "Bearer rated:" + secret}))
    report("rate_second", post({"sender": "bounce@shop.example", "recipients": ["bad-13@api.test"],
                                "content": {"from": "news@shop.example", "text": "x"}}, headers={"Authorization": "Bearer rated:" + secret}))
    with urllib.request.urlopen("http://%s:%d/api/v1/openapi.json" % (host, port), timeout=30) as r:
        doc = json.loads(r.read())
        print(json.dumps({"case": "openapi", "status": r.status, "body": doc}), flush=True)
    # The served document is valid OpenAPI 3, and every answer above matches its schema for that status.
    import jsonschema, openapi_spec_validator
    problems = []
    try:
        openapi_spec_validator.validate(doc)
    except Exception as e:
        problems.append("document: %s" % e)
    responses = doc["paths"]["/api/v1/messages"]["post"]["responses"]
    for name, status, body in seen:
        spec = responses.get(str(status))
        if spec is None:
            problems.append("%s: status %d is not documented" % (name, status)); continue
        schema = dict(spec["content"]["application/json"]["schema"]); schema["components"] = doc["components"]
        try:
            jsonschema.Draft4Validator(schema).validate(body)
        except jsonschema.ValidationError as e:
            problems.append("%s: %s" % (name, e.message))
    print(json.dumps({"case": "schema", "status": 0, "body": {"problems": problems, "checked": len(seen)}}), flush=True)
    """#

    /// Parses every captured message with Python's `email` and prints what the test checks.
    static let parseScript = #"""
    import email, email.policy, hashlib, json, sys
    for path in sys.argv[1:]:
        msg = email.message_from_bytes(open(path, "rb").read(), policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        atts = [[a.get_filename(), hashlib.sha256(a.get_payload(decode=True)).hexdigest()] for a in msg.iter_attachments()]
        print(json.dumps({"subject": str(msg["subject"]), "to": str(msg["to"]), "from": str(msg["from"]),
                          "job": msg["x-job"], "campaign": msg["x-campaign-id"], "note": str(msg["x-note"] or ""),
                          "received": str(msg["received"] or ""), "message_id": msg["message-id"],
                          "dkim": msg["dkim-signature"] is not None, "subject_raw": str(msg["subject"]),
                          "text": body.get_content().replace("\r\n", "\n") if body else "", "attachments": atts,
                          "defects": [str(d) for p in msg.walk() for d in p.defects]}))
    """#

    @Test(arguments: BackendKind.testable)
    func pythonAndCurlInjectAndEveryBadInputIsRefused(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try Self.python3()
        let curl = try #require(findTool("curl"), "curl is not installed (scripts/setup installs it)")
        try #require(Self.keyHash.hasPrefix("$pbkdf2-sha256$100000$"), "peregrine passwd failed: \(Self.keyHash)")
        let dir = try TestDirectory("http-api-\(kind.rawValue)")
        let listenIP = E2E.ip(20, kind, host: 9), receiverIP = E2E.ip(20, kind, host: 1)
        let receiver = try DaemonDKIMTests.Receiver(ip: receiverIP, directory: dir.file("captured"))
        let rsa = try DKIMExternalVerifiers.makeKey(.rsa2048, name: "api", in: dir.path)
        let config = daemonConfig(dir, listen: listenIP, """
            http-injection-listener \(listenIP):8080
            http-injection-max-request-size 2M
            http-injection-timeout 3s
            smtp-auth-failure-delay 10ms
            <api-key shop>
                key-hash \(Self.keyHash)
                default-virtual-mta pool1
                max-message-size 200K
                allowed-sender-domain shop.example
                max-rcpt-per-message 1000
                domain-key api,shop.example,\(rsa.privateKeyPath)
            </api-key>
            <api-key rated>
                key-hash \(Self.keyHash)
                max-msg-rate 1/h
            </api-key>
            <domain api.test>
                route [\(receiverIP)]:\(receiver.port)
                retry-after 1s
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        // The API listener is bound before the "running" line; a bounded wait guards a slow start.
        let apiReady = E2E.waitUntil(30) { (try? E2E.httpGet("\(listenIP):8080", "/api/v1/openapi.json")) != nil }
        try #require(apiReady, "the API listener did not come up: \(daemon.log.suffix(2000))")

        // A client that trickles its body is closed after http-injection-timeout; others are served meanwhile.
        let slow = try SinkTestClient(listenIP, 8080)
        let slowBody = #"{"sender":"bounce@shop.example","recipients":["slow@api.test"],"content":{"from":"news@shop.example","text":"x"}}"#
        try slow.send("POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + "Authorization: Bearer shop:\(Self.secret)\r\nContent-Length: \(slowBody.utf8.count)\r\n\r\n"
                      + String(slowBody.prefix(10)))

        let (status, output) = runTool(python, ["-c", Self.clientScript, listenIP, "8080", Self.secret], seconds: 300)
        #expect(status == 0, "\(output)")
        var results: [String: [String: Any]] = [:]
        for line in output.split(separator: "\n") {
            if let o = try? E2E.json(Data(line.utf8)), let name = o["case"] as? String { results[name] = o }
        }
        func check(_ name: String, _ status: Int, _ code: String?, field: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            let r = results[name]
            #expect(r?["status"] as? Int == status, "\(name): \(String(describing: r))", sourceLocation: sourceLocation)
            guard let code else { return }
            let error = (r?["body"] as? [String: Any])?["error"] as? [String: Any]
            #expect(error?["code"] as? String == code, "\(name): \(String(describing: r))", sourceLocation: sourceLocation)
            #expect((error?["message"] as? String)?.isEmpty == false, "\(name)", sourceLocation: sourceLocation)
            if let field { #expect(error?["field"] as? String == field, "\(name): \(String(describing: r))", sourceLocation: sourceLocation) }
        }
        check("structured", 200, nil)
        check("raw", 200, nil)
        check("batch", 200, nil)
        check("bad_json", 400, "invalid_json")
        #expect(((results["bad_json"]?["body"] as? [String: Any])?["error"] as? [String: Any])?["offset"] as? Int == 35)
        check("no_auth", 401, "unauthorized")
        check("wrong_key", 401, "unauthorized")
        check("sender_domain", 403, "sender_not_allowed", field: "sender")
        check("bad_address", 422, "invalid_address", field: "recipients[1]")
        check("bad_base64", 422, "invalid_base64", field: "content.attachments[0].content")
        check("wrong_type", 422, "invalid_type", field: "recipients")
        check("missing_field", 422, "missing_field", field: "content.from")
        check("message_too_large", 413, "message_too_large")
        check("request_too_large", 413, "request_too_large")
        check("media_type", 415, "unsupported_media_type")
        check("second_item_bad", 422, "invalid_base64", field: "content.attachments[1].content")
        check("unknown_vmta", 422, "unknown_virtual_mta", field: "virtual_mta")
        check("rate_first", 200, nil)
        check("rate_second", 429, "rate_limited")
        #expect(Int(results["rate_second"]?["retry_after"] as? String ?? "") ?? 0 >= 1, "\(String(describing: results["rate_second"]))")
        #expect(((results["openapi"]?["body"] as? [String: Any])?["openapi"] as? String) == "3.0.3")
        let schema = results["schema"]?["body"] as? [String: Any]
        #expect((schema?["problems"] as? [String])?.isEmpty == true, "\(String(describing: schema))")
        #expect(schema?["checked"] as? Int == 18, "\(String(describing: schema))")

        // Per-recipient ids: two messages for the substituted pair, one shared id for the batch.
        let structured = (results["structured"]?["body"] as? [String: Any])?["recipients"] as? [[String: Any]] ?? []
        #expect(structured.map { $0["status"] as? String } == ["queued", "queued"])
        #expect(Set(structured.compactMap { $0["message_id"] as? String }).count == 2)
        let batch = (results["batch"]?["body"] as? [String: Any])?["recipients"] as? [[String: Any]] ?? []
        #expect(batch.count == 1000)
        #expect(Set(batch.compactMap { $0["message_id"] as? String }).count == 1)

        // curl, Basic auth, body from a file.
        let curlBody = try dir.write("curl.json", #"{"sender":"bounce@shop.example","recipients":["curl@api.test"],"#
                                     + #""content":{"from":"news@shop.example","subject":"from curl","text":"curl body"}}"#)
        let c = runTool(curl, ["-sS", "--max-time", "60", "-u", "shop:\(Self.secret)", "-H", "Content-Type: application/json",
                               "--data-binary", "@\(curlBody)", "-w", "\n%{http_code}", "http://\(listenIP):8080/api/v1/messages"], seconds: 90)
        #expect(c.0 == 0 && c.1.hasSuffix("\n200") && c.1.contains("\"status\":\"queued\""), "\(c.1)")

        // The slow client was closed (EOF) by the timeout, having queued nothing.
        let closed = E2E.waitUntil(60) {
            var b = [UInt8](repeating: 0, count: 4096)
            var p = pollfd(fd: slow.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return false }
            let n = recv(slow.fd, &b, b.count, Int32(MSG_DONTWAIT))
            return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)
        }
        #expect(closed, "the trickling client was not closed")

        // Delivered: 2 structured + raw + the batch (one message, 1000 recipients) + rated + curl:
        // every recipient's d record is written after the receiver stored the message.
        let arrived = E2E.waitUntil(180, every: 0.2) {
            Self.records(dir.file("acct.csv")).filter { $0["type"] == "d" }.count >= 1005
        }
        #expect(arrived, "captured \(receiver.messages.count): \(daemon.log.suffix(3000))")
        let files = receiver.messages.map { dir.file("captured") + "/" + $0.name }
        let parsed = runTool(python, ["-c", Self.parseScript] + files, seconds: 120)
        #expect(parsed.0 == 0, "\(parsed.1)")
        let mails = parsed.1.split(separator: "\n").compactMap { try? E2E.json(Data($0.utf8)) }
        let alice = mails.first { ($0["to"] as? String) == "alice@api.test" }
        let bob = mails.first { ($0["to"] as? String) == "bob@api.test" }
        #expect(alice?["subject"] as? String == "Grüße Alice — 日本語", "\(String(describing: alice))")
        #expect(bob?["subject"] as? String == "Grüße Bøb — 日本語", "\(String(describing: bob))")
        #expect((alice?["text"] as? String)?.hasPrefix("Hello Alice\n") == true)
        #expect((alice?["text"] as? String)?.contains("\n.dot line\n") == true)
        #expect(alice?["from"] as? String == "Zoë Shop <news@shop.example>")
        #expect(alice?["job"] as? String == "job-42")
        #expect(alice?["campaign"] as? String == "spring")
        #expect(alice?["note"] as? String == "naïve")
        #expect((alice?["received"] as? String)?.contains("with HTTP (api-key shop)") == true, "\(String(describing: alice))")
        let attachmentBytes = (0..<70000).map { UInt8(($0 * 7 + 3) % 256) }
        let want: [[String]] = [["data.bin", Self.hex(attachmentBytes)], ["résumé.txt", Self.hex(Array("plain text\n".utf8))]]
        #expect((alice?["attachments"] as? [[String]]) == want, "\(String(describing: alice?["attachments"]))")
        #expect((bob?["attachments"] as? [[String]]) == want)
        for m in mails { #expect((m["defects"] as? [Any])?.isEmpty == true, "\(m)") }

        // DKIM at injection, as for SMTP: the key's domain-key signs its messages (dkimpy verifies
        // them on its own); "dkim": false leaves the raw one unsigned.
        #expect(alice?["dkim"] as? Bool == true && bob?["dkim"] as? Bool == true)
        let rawMail = mails.first { ($0["subject_raw"] as? String) == "raw one" }
        #expect(rawMail != nil && rawMail?["dkim"] as? Bool == false, "\(String(describing: rawMail))")
        let signed = receiver.messages.filter { m in
            let text = String(decoding: m.bytes, as: UTF8.self)
            return text.contains("\r\nTo: alice@api.test\r\n") || text.contains("\r\nTo: bob@api.test\r\n")
        }.map(\.bytes)
        #expect(signed.count == 2)
        let verdicts = try DKIMExternalVerifiers.dkimpy(signed, records: ["api._domainkey.shop.example": rsa.record],
                                                        directory: dir.path)
        #expect(verdicts == [true, true], "dkimpy: \(verdicts)")

        // Accounting: an r record per queued recipient, with the key as rcvSmtpUser; none for a refused request.
        let acctReady = E2E.waitUntil(30) {
            Self.records(dir.file("acct.csv")).filter { $0["type"] == "r" }.count >= 1005
        }
        #expect(acctReady, "r records: \(Self.records(dir.file("acct.csv")).filter { $0["type"] == "r" }.count)")
        let received = Self.records(dir.file("acct.csv")).filter { $0["type"] == "r" }
        #expect(received.count == 1005)
        #expect(received.filter { $0["rcvSmtpUser"] == "api-key:shop" }.count == 1004)
        #expect(received.filter { $0["rcvSmtpUser"] == "api-key:rated" }.count == 1)
        #expect(received.first { $0["rcpt"] == "alice@api.test" }?["jobId"] == "job-42")
        let refusedQueued = Self.records(dir.file("acct.csv")).filter { ($0["rcpt"] ?? "").hasPrefix("bad-") || $0["rcpt"] == "slow@api.test" }
        #expect(refusedQueued.isEmpty, "\(refusedQueued)")
    }

    /// A python3 with openapi-spec-validator (and its jsonschema): PATH first, as scripts/setup's pip installs there.
    static func python3() throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for candidate in path.map({ $0 + "/python3" }) + ["/usr/local/bin/python3", "/usr/bin/python3"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            if runTool(candidate, ["-c", "import openapi_spec_validator, jsonschema"], seconds: 60).0 == 0 { return candidate }
        }
        throw SinkTestError("no python3 with openapi-spec-validator (scripts/setup installs it)")
    }

    /// The accounting file's rows: none while the file does not exist yet; a file
    /// that does not parse fails the test (a "nothing refused was queued" check
    /// must not pass on an unreadable file).
    static func records(_ path: String) -> [[String: String]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        do { return try PeregrineAccountingRows.parse(Array(data)) } catch {
            Issue.record("\(path) does not parse: \(error)")
            return []
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: findTool("sha256sum") ?? "/usr/bin/sha256sum")
        let i = Pipe(), o = Pipe()
        p.standardInput = i; p.standardOutput = o
        guard (try? ChildProcess.run(p)) != nil else { return "" }
        let reader = Unchecked(Data())
        let done = DispatchSemaphore(value: 0)
        Thread { reader.value = o.fileHandleForReading.readDataToEndOfFile(); done.signal() }.start()
        i.fileHandleForWriting.write(Data(bytes)); try? i.fileHandleForWriting.close()
        _ = done.wait(timeout: .now() + 30)
        p.waitUntilExit()
        return String(String(decoding: reader.value, as: UTF8.self).prefix(64))
    }
}

/// The HTTP API on a full spool (scenario 21): a request whose messages
/// cannot be made durable gets `503 spool_unavailable` with `Retry-After`,
/// never a 200; once space returns the API takes mail again.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: SpoolTmpfs.available, "needs root and mount -t tmpfs (a small file system to fill)"), .blockingIO)
struct DaemonHTTPInjectionSpoolFaultTests {
    static let script = #"""
    import json, sys, urllib.request, urllib.error
    host, port, secret, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    for i in range(count):
        body = json.dumps({"sender": "b@shop.example", "recipients": ["r%d@spool.test" % i],
                           "content": {"from": "n@shop.example", "text": "x" * 2000}}).encode()
        req = urllib.request.Request("http://%s:%d/api/v1/messages" % (host, port), data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer shop:" + secret})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, retry, answer = r.status, r.headers.get("Retry-After"), json.loads(r.read())
        except urllib.error.HTTPError as e:
            status, retry, answer = e.code, e.headers.get("Retry-After"), json.loads(e.read())
        if status != 200:
            print(json.dumps({"sent": i, "status": status, "retry_after": retry, "body": answer})); sys.exit(0)
    print(json.dumps({"sent": count, "status": 200}))
    """#

    @Test(arguments: BackendKind.testable)
    func fullSpoolGives503AndTheAPIRecovers(kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try DaemonHTTPInjectionTests.python3()
        try #require(DaemonHTTPInjectionTests.keyHash.hasPrefix("$pbkdf2-sha256$"), "peregrine passwd failed")
        let dir = try TestDirectory("http-api-spool-\(kind.rawValue)")
        let spool = dir.file("spool")
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        guard SpoolTmpfs.mount(spool, kilobytes: 2048) else { Issue.record("\(kind): tmpfs mount failed"); return }
        defer { SpoolTmpfs.unmount(spool) }
        let ip = E2E.ip(21, kind, host: 9)
        let config = daemonConfig(dir, listen: ip, """
            http-injection-listener \(ip):8080
            <api-key shop>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
            </api-key>
            <domain spool.test>
                route [\(E2E.ip(21, kind, host: 8))]:9
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, threads: 1,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        let ready = E2E.waitUntil(30) { (try? E2E.httpGet("\(ip):8080", "/api/v1/openapi.json")) != nil }
        try #require(ready, "the API listener did not come up: \(daemon.log.suffix(2000))")
        let first = runTool(python, ["-c", Self.script, ip, "8080", DaemonHTTPInjectionTests.secret, "1"], seconds: 60)
        #expect(first.1.contains("\"status\": 200"), "\(kind): \(first.1)")

        let filler = spool + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let chunk = [UInt8](repeating: 0x46, count: 65536)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        let full = runTool(python, ["-c", Self.script, ip, "8080", DaemonHTTPInjectionTests.secret, "200"], seconds: 300)
        let answer = try E2E.json(Data(full.1.utf8))
        #expect(answer["status"] as? Int == 503, "\(kind): \(full.1)")
        #expect(Int(answer["retry_after"] as? String ?? "") ?? 0 >= 1, "\(kind): \(full.1)")
        let error = (answer["body"] as? [String: Any])?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "spool_unavailable", "\(kind): \(full.1)")
        let message = error?["message"] as? String ?? ""
        let namesSpoolFiles = message.contains(spool)
        #expect(!namesSpoolFiles, "\(kind): the answer names the spool's files: \(message)")

        _ = unlink(filler)
        let recovered = E2E.waitUntil(60, every: 0.2) {
            runTool(python, ["-c", Self.script, ip, "8080", DaemonHTTPInjectionTests.secret, "1"], seconds: 60).1.contains("\"status\": 200")
        }
        #expect(recovered, "\(kind): the API did not take mail after space returned: \(daemon.log.suffix(2000))")
    }
}
