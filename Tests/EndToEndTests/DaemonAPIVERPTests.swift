#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// VERP on the HTTP API and XVERP in EHLO (issue 16), per backend:
/// `verp-default yes` in an `<api-key>` gives each recipient of its messages
/// its own transaction and return path (as in a `<source>`), a key without
/// it sends one transaction; the EHLO reply offers XVERP to a client whose
/// `<source>` relays or VERPs by default, and not to one that may not relay.
/// Judged by what a Python receiver got and by smtplib's `has_extn`.
/// Scenario number 53.
@Suite(.timeLimit(.minutes(5)), .blockingIO) struct DaemonAPIVERPTests {
    static let script = #"""
    import json, smtplib, sys, urllib.request
    ip, port, api, secret, relay_src, closed_src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    out = {}
    for name, src in (("relaying", relay_src), ("closed", closed_src)):
        s = smtplib.SMTP(ip, port, source_address=(src, 0), timeout=30)
        s.ehlo("client.test")
        out[name] = s.has_extn("xverp")
        s.quit()
    for key in ("verp", "plain"):
        body = {"sender": "news@shop.example", "recipients": ["%s-a@verp.test" % key, "%s-b@verp.test" % key],
                "raw": "From: news@shop.example\nTo: list@shop.example\nSubject: %s\n\nx\n" % key}
        req = urllib.request.Request("http://%s:%d/api/v1/messages" % (ip, api), data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer %s:%s" % (key, secret)})
        with urllib.request.urlopen(req, timeout=60) as r:
            out[key] = r.status
    print(json.dumps(out))
    """#

    @Test(arguments: BackendKind.testable)
    func apiKeyVerpDefaultAndXVERPInEHLO(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        try #require(DaemonHTTPInjectionTests.keyHash.hasPrefix("$pbkdf2-sha256$"), "peregrine passwd failed")
        let dir = try TestDirectory("api-verp-\(kind.rawValue)")
        let receiver = try RecordingReceiver(dir, ip: E2E.ip(53, kind, host: 5))
        defer { receiver.terminate() }
        let listen = E2E.ip(53, kind), relaying = E2E.ip(53, kind, host: 1), closed = E2E.ip(53, kind, host: 2)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            http-injection-listener \(listen):8080
            <source \(closed)/32>
                always-allow-relaying no
            </source>
            <api-key verp>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
                verp-default yes
            </api-key>
            <api-key plain>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
            </api-key>
            <domain verp.test>
                route [\(receiver.ip)]:\(receiver.port)
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: 1, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        try #require(PrivateLoopback.waitForListener(listen, 8080), "the API listener did not come up: \(d.log.suffix(2000))")
        let (status, output) = runTool(python, ["-c", Self.script, d.listenIP, String(d.listenPort), "8080",
                                                DaemonHTTPInjectionTests.secret, relaying, closed], seconds: 90)
        #expect(status == 0, "\(output)\n\(d.log.suffix(2000))")
        let result = try? E2E.json(Data(output.utf8))
        #expect(result?["relaying"] as? Bool == true, "\(output)")
        #expect(result?["closed"] as? Bool == false, "\(output)")
        #expect(result?["verp"] as? Int == 200 && result?["plain"] as? Int == 200, "\(output)")

        // Two VERP transactions for the verp key, one two-recipient transaction for the plain key.
        #expect(E2E.waitUntil(60) { receiver.messages.count == 3 }, "\(receiver.messages.map(\.rcpts))\n\(d.log.suffix(2000))")
        var returnPath: [String: String] = [:]
        for m in receiver.messages { for r in m.rcpts { returnPath[r] = m.mailFrom } }
        #expect(returnPath["verp-a@verp.test"] == "news+verp-a=verp.test@shop.example", "\(returnPath)")
        #expect(returnPath["verp-b@verp.test"] == "news+verp-b=verp.test@shop.example", "\(returnPath)")
        let plain = receiver.messages.filter { $0.rcpts.contains("plain-a@verp.test") }
        #expect(plain.count == 1 && plain.first?.rcpts.sorted() == ["plain-a@verp.test", "plain-b@verp.test"]
                && plain.first?.mailFrom == "news@shop.example", "\(plain.map { ($0.mailFrom, $0.rcpts) })")
    }
}
