#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// SIGTERM with API requests open (issue 16): a request whose body was sent
/// before the signal (300 messages, likely still being committed) gets its
/// answer, 200 with every recipient queued or 503 `shutting_down`, never a
/// bare EOF, and exactly what it says was queued has `r` records; a request
/// completed after the daemon logged "shutting down" (its head and most of
/// its body were sent before) gets 503 `shutting_down` with Retry-After and
/// queues nothing. Before the drain, shutdown closed every API connection
/// and both saw EOF. Scenario 51.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO)
struct DaemonHTTPInjectionDrainTests {
    /// Driven from Python so the signal and the last byte follow the daemon's
    /// own log line, not a sleep. Prints one JSON object.
    static let script = #"""
    import json, os, signal, socket, sys, time
    host, port, secret, pid, log_path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])

    def request(body):
        head = ("POST /api/v1/messages HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                "Authorization: Bearer shop:%s\r\nContent-Length: %d\r\n\r\n" % (host, port, secret, len(body)))
        return head.encode() + body

    def answer(s):
        # A reset (the daemon closed the connection first) is an answer the test reports, not a traceback.
        try:
            return read_answer(s)
        except OSError as e:
            return {"eof": True, "error": repr(e)}

    def read_answer(s):
        data = b""
        s.settimeout(120)
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return {"eof": True, "got": data.decode("latin-1")}
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                return {"eof": True, "got": data.decode("latin-1")}
            rest += chunk
        return {"status": int(lines[0].split()[1]), "retry_after": headers.get("retry-after"),
                "connection": headers.get("connection"), "body": json.loads(rest[:length])}

    # Authenticated once first, so the PBKDF2 check is cached and plays no part below.
    warm = socket.create_connection((host, port), timeout=60)
    warm.sendall(request(json.dumps({"sender": "b@shop.example", "recipients": ["warm@drain.test"],
                                     "content": {"from": "n@shop.example", "text": "warm"}}).encode()))
    warmed = answer(warm)
    warm.close()

    partial = socket.create_connection((host, port), timeout=60)
    late = json.dumps({"sender": "b@shop.example", "recipients": ["late@drain.test"],
                       "content": {"from": "n@shop.example", "text": "late"}}).encode()
    partial.sendall(request(late)[:-1])
    big = socket.create_connection((host, port), timeout=60)
    body = json.dumps({"sender": "b@shop.example",
                       "recipients": [{"email": "r%d@drain.test" % i, "substitutions": {"n": str(i)}} for i in range(n)],
                       "content": {"from": "n@shop.example", "subject": "drain {{n}}", "text": "message {{n}}\n" * 50}}).encode()
    big.sendall(request(body))
    os.kill(pid, signal.SIGTERM)
    signalled = time.time()
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(log_path, errors="replace") as f:
            if "shutting down" in f.read():
                break
        time.sleep(0.005)
    logged = time.time()
    try:
        partial.sendall(request(late)[-1:])
        late_sent = True
    except OSError as e:  # reset before the last byte: the answer below says so
        late_sent = repr(e)
    big_answer = answer(big)
    big_answered = time.time()
    late_answer = answer(partial)
    # Seconds from the SIGTERM: when this script saw "shutting down", and when each answer (or reset) came.
    timing = {"logged": round(logged - signalled, 3), "big": round(big_answered - signalled, 3),
              "late": round(time.time() - signalled, 3), "late_sent": late_sent}
    print(json.dumps({"warm": warmed, "big": big_answer, "late": late_answer, "timing": timing}))
    """#

    @Test(arguments: BackendKind.testable)
    func sigtermAnswersRequestsInFlightAndRefusesLateOnes(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        try #require(DaemonHTTPInjectionTests.keyHash.hasPrefix("$pbkdf2-sha256$"), "peregrine passwd failed")
        let dir = try TestDirectory("http-api-drain-\(kind.rawValue)")
        let ip = E2E.ip(51, kind, host: 9)
        let config = daemonConfig(dir, listen: ip, """
            http-injection-listener \(ip):8080
            shutdown-timeout 60s
            <api-key shop>
                key-hash \(DaemonHTTPInjectionTests.keyHash)
            </api-key>
            <domain drain.test>
                route [\(E2E.ip(51, kind, host: 8))]:9
                retry-after 1h
            </domain>
            """)
        let d = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let apiReady = E2E.waitUntil(30) { (try? E2E.httpGet("\(ip):8080", "/api/v1/openapi.json")) != nil }
        try #require(apiReady, "the API listener did not come up: \(d.log.suffix(2000))")
        let n = 300
        let script = try dir.write("drain.py", Self.script)
        let r = E2E.run(python, [script, ip, "8080", DaemonHTTPInjectionTests.secret, "\(d.process.processIdentifier)",
                                 dir.file("daemon.log"), "\(n)"], timeout: 180)
        // try?: a script that printed no JSON must show its stderr and the daemon's log, not only the parse error.
        let out = try #require((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any],
                               "\(r.stdout)\n\(r.stderr)\n\(d.log.suffix(2000))")
        #expect(E2E.waitUntil(90) { !d.process.isRunning }, "the daemon did not exit after SIGTERM: \(d.log.suffix(2000))")
        let warm = out["warm"] as? [String: Any] ?? [:]
        #expect(warm["status"] as? Int == 200, "\(warm)")

        // A reset or EOF: the timing and the daemon's log say when and why.
        let context = "timing \(out["timing"] ?? "none"); daemon log:\n\(d.log.suffix(1500))"
        let late = out["late"] as? [String: Any] ?? [:]
        #expect(late["eof"] == nil, "the late request saw EOF instead of an answer: \(late); \(context)")
        #expect(late["status"] as? Int == 503 && late["retry_after"] as? String != nil, "\(late)")
        #expect(((late["body"] as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "shutting_down", "\(late)")
        #expect((late["connection"] as? String)?.lowercased() == "close", "\(late)")

        let big = out["big"] as? [String: Any] ?? [:]
        #expect(big["eof"] == nil, "the request in flight saw EOF instead of an answer: \(big); \(context)")
        let status = big["status"] as? Int
        let queued = (big["body"] as? [String: Any])?["queued"] as? Int ?? 0
        #expect(status == 200 && queued == n || status == 503 && queued == 0, "\(status.map(String.init) ?? "no status") queued \(queued)")
        // What the answers say was queued is exactly what was received.
        let received = DaemonHTTPInjectionTests.records(dir.file("acct.csv")).filter { $0["type"] == "r" }.compactMap { $0["rcpt"] }
        #expect(received.filter { $0.hasPrefix("r") && $0.hasSuffix("@drain.test") }.count == queued, "\(received.count) r records")
        #expect(!received.contains("late@drain.test"))
        #expect(received.contains("warm@drain.test"))
    }
}
