#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// `http-injection-listener ADDR:PORT tls=yes` (issue 16) per backend: TLS
/// from the first byte with `smtp-server-tls-certificate`/`-key`. curl
/// `--cacert` and Python `http.client` with a verifying `ssl` context inject
/// messages that arrive at a Python SMTP receiver; a plaintext HTTP client on
/// the TLS port queues nothing and is closed; clients stalled mid-handshake
/// are closed by `http-injection-timeout`, and past
/// `http-injection-max-connections` the longest-waiting one is evicted, so
/// stalled handshakes hold a bounded number of connections.
/// Scenario number 52.
@Suite(.timeLimit(.minutes(5)), .blockingIO) struct DaemonHTTPInjectionTLSTests {
    static let clientScript = #"""
    import http.client, json, socket, ssl, sys
    ip, port, secret, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.create_default_context(cafile=cafile)   # verifies the chain and the name mx.test
    conn = http.client.HTTPSConnection("mx.test", port, context=ctx, timeout=60)
    # mx.test does not resolve: connect to the daemon's address, verify the certificate as mx.test.
    conn.sock = ctx.wrap_socket(socket.create_connection((ip, port), timeout=60), server_hostname="mx.test")
    out = {"version": conn.sock.version()}
    for i in (1, 2):   # keep-alive: two requests on one TLS connection
        body = {"sender": "bounce@shop.example", "recipients": ["py%d@tls.test" % i],
                "content": {"from": "news@shop.example", "subject": "over TLS", "text": "python %d" % i}}
        conn.request("POST", "/api/v1/messages", body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Authorization": "Bearer shop:" + secret})
        r = conn.getresponse()
        out["status%d" % i] = r.status
        out["body%d" % i] = json.loads(r.read())
    conn.close()
    # The same client refuses a server it cannot verify (no CA given): the certificate really is checked.
    try:
        bad = ssl.create_default_context()
        bad.wrap_socket(socket.create_connection((ip, port), timeout=60), server_hostname="mx.test")
        out["unverified"] = "connected"
    except ssl.SSLCertVerificationError:
        out["unverified"] = "refused"
    print(json.dumps(out))
    """#

    @Test(arguments: BackendKind.testable)
    func curlAndPythonInjectOverTLSAndPlaintextOrStalledClientsQueueNothing(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try DKIMExternalVerifiers.python3()
        let curl = try #require(findTool("curl"), "curl is not installed (scripts/setup installs it)")
        let tls = try #require(E2ETLSCertificates.files, "openssl could not make a certificate")
        try #require(DaemonHTTPInjectionTests.keyHash.hasPrefix("$pbkdf2-sha256$"), "peregrine passwd failed")
        let secret = DaemonHTTPInjectionTests.secret
        let dir = try TestDirectory("http-api-tls-\(kind.rawValue)")
        let ip = E2E.ip(52, kind, host: 9), receiverIP = E2E.ip(52, kind, host: 1)
        let receiver = try DaemonDKIMTests.Receiver(ip: receiverIP, directory: dir.file("captured"))
        let config = daemonConfig(dir, listen: ip, """
            smtp-server-tls-certificate \(tls.certificate)
            smtp-server-tls-key \(tls.key)
            http-injection-listener \(ip):8443 tls=yes
            http-injection-timeout 3s
            http-injection-max-connections 4
            <api-key shop>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
            </api-key>
            <domain tls.test>
                route [\(receiverIP)]:\(receiver.port)
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, threads: 1,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        try #require(PrivateLoopback.waitForListener(ip, 8443), "the TLS API listener did not come up: \(daemon.log.suffix(2000))")

        // Stalled mid-handshake: six clients send half a ClientHello record header and wait.
        // Four connections at most: the earliest are evicted, the rest closed by the timeout.
        let stalled = try (0..<6).map { _ in try SinkTestClient(ip, 8443) }
        for s in stalled { try s.send("\u{16}\u{03}\u{01}\u{02}") }
        // A plaintext client with a valid request: TLS fails on its first bytes, nothing is queued.
        let plain = try SinkTestClient(ip, 8443)
        let plainBody = #"{"sender":"bounce@shop.example","recipients":["plain@tls.test"],"content":{"from":"news@shop.example","text":"x"}}"#
        try plain.send("POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       + "Authorization: Bearer shop:\(secret)\r\nContent-Length: \(plainBody.utf8.count)\r\n\r\n\(plainBody)")
        #expect(Self.waitForEOF(plain.fd, seconds: 30), "\(kind): the plaintext client was not closed")

        // Python http.client verifying the certificate, keep-alive, two messages.
        let (status, output) = runTool(python, ["-c", Self.clientScript, ip, "8443", secret, tls.certificate], seconds: 120)
        #expect(status == 0, "\(kind): \(output)")
        let py = try? E2E.json(Data(output.utf8))
        #expect(py?["status1"] as? Int == 200 && py?["status2"] as? Int == 200, "\(kind): \(output)")
        #expect((py?["version"] as? String)?.hasPrefix("TLSv1.") == true, "\(kind): \(output)")
        #expect(py?["unverified"] as? String == "refused", "\(kind): \(output)")

        // curl --cacert, the name checked through --resolve.
        let body = try dir.write("curl.json", #"{"sender":"bounce@shop.example","recipients":["curl@tls.test"],"#
                                 + #""content":{"from":"news@shop.example","subject":"curl over TLS","text":"curl"}}"#)
        let c = runTool(curl, ["-sS", "--max-time", "60", "--cacert", tls.certificate, "--resolve", "mx.test:8443:\(ip)",
                               "-u", "shop:\(secret)", "-H", "Content-Type: application/json", "--data-binary", "@\(body)",
                               "-w", "\n%{http_code}", "https://mx.test:8443/api/v1/messages"], seconds: 90)
        #expect(c.0 == 0 && c.1.hasSuffix("\n200") && c.1.contains("\"status\":\"queued\""), "\(kind): \(c.1)")

        // Every stalled handshake is closed (evicted or timed out).
        for (i, s) in stalled.enumerated() {
            #expect(Self.waitForEOF(s.fd, seconds: 30), "\(kind): stalled client \(i) was not closed")
        }

        // The three TLS messages arrive; the plaintext one was never queued.
        let arrived = E2E.waitUntil(60, every: 0.2) {
            DaemonHTTPInjectionTests.records(dir.file("acct.csv")).filter { $0["type"] == "d" }.count >= 3
        }
        #expect(arrived, "\(kind): captured \(receiver.messages.count): \(daemon.log.suffix(3000))")
        let records = DaemonHTTPInjectionTests.records(dir.file("acct.csv"))
        #expect(Set(records.filter { $0["type"] == "d" }.compactMap { $0["rcpt"] }) == ["py1@tls.test", "py2@tls.test", "curl@tls.test"])
        #expect(!records.contains { $0["rcpt"] == "plain@tls.test" }, "\(kind): the plaintext request was queued")
        #expect(receiver.messages.count == 3)
    }

    /// True once the peer closed `fd` (EOF or reset; alert bytes before it are read and dropped).
    static func waitForEOF(_ fd: Int32, seconds: Double) -> Bool {
        E2E.waitUntil(seconds) {
            var b = [UInt8](repeating: 0, count: 4096)
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return false }
            let n = recv(fd, &b, b.count, Int32(MSG_DONTWAIT))
            return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)
        }
    }
}
