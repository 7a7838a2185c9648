#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport

/// A webhook endpoint for the tests: Python's `http.server` (HTTP/1.1,
/// keep-alive; TLS when given a certificate). It checks every POST's
/// `Peregrine-Signature` (HMAC-SHA256 over "t.body", and a timestamp within
/// 5 minutes) and answers 401 to a bad one; answers 500 to the first
/// `failFirst` POSTs; appends one JSON line per POST to `posts.jsonl`
/// (status, signature check, every event with all its fields, arrival order).
final class WebhookReceiver {
    static let script = #"""
import hashlib, hmac, json, os, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ip, port, secret, fail_first, out_path, port_file = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4]), sys.argv[5], sys.argv[6]
cert = sys.argv[7] if len(sys.argv) > 7 else ""
key = sys.argv[8] if len(sys.argv) > 8 else ""
lock = threading.Lock()
count = [0]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        sig = self.headers.get("Peregrine-Signature", "")
        parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
        t = parts.get("t", "")
        good = False
        if t.isdigit() and abs(time.time() - int(t)) < 300:
            want = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
            good = hmac.compare_digest(want, parts.get("v1", ""))
        with lock:
            count[0] += 1
            n = count[0]
            if not good:
                status = 401
            elif n <= fail_first:
                status = 500
            else:
                status = 200
            events = []
            try:
                events = json.loads(body)
            except Exception:
                status = 400
            # Every field of every event, as sent (the tests check the documented ones).
            rec = {"n": n, "status": status, "signature_ok": good, "webhook": self.headers.get("Peregrine-Webhook", ""),
                   "events": [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []}
            with open(out_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
        reply = b"ok" if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

server = Server((ip, port), Handler)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"""#

    struct Post { var status: Int; var signatureOK: Bool; var events: [[String: Any]]; var webhook = "" }

    let process = Process()
    let outPath: String
    let port: UInt16

    /// Starts the receiver on `ip` (port 0: the kernel picks; or the port it had before a restart).
    init(_ dir: TestDirectory, ip: String, port: UInt16 = 0, secret: String, failFirst: Int = 0,
         certificate: (String, String)? = nil, tag: String = "hook") throws {
        outPath = dir.file("\(tag)-posts.jsonl")
        let portFile = dir.file("\(tag)-port-\(UUID().uuidString.prefix(6))")
        let scriptPath = try dir.write("webhook_receiver.py", Self.script)
        let python = try DKIMExternalVerifiers.python3()
        var args = [scriptPath, ip, String(port), secret, String(failFirst), outPath, portFile]
        if let certificate { args += [certificate.0, certificate.1] }
        process.executableURL = URL(fileURLWithPath: python)  // ChildProcess.run adds setpriv --pdeathsig
        process.arguments = args
        let log = dir.file("\(tag)-receiver.log")
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)
        process.standardOutput = handle
        process.standardError = handle
        try ChildProcess.run(process)
        var bound: UInt16 = 0
        let child = process
        E2E.waitUntil(30, every: 0.05) {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let p = UInt16(text) { bound = p; return true }
            return !child.isRunning
        }
        guard bound != 0 else {
            stopProcess(child)
            throw SinkTestError("webhook receiver did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        self.port = bound
    }

    func stop() { stopProcess(process, grace: 5) }
    deinit { stop() }

    /// Every POST so far, in arrival order.
    var posts: [Post] {
        guard let text = try? String(contentsOfFile: outPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return Post(status: o["status"] as? Int ?? 0, signatureOK: o["signature_ok"] as? Bool ?? false,
                        events: o["events"] as? [[String: Any]] ?? [], webhook: o["webhook"] as? String ?? "")
        }
    }

    /// Events of acknowledged (200) POSTs, in arrival order (duplicates kept).
    var acknowledgedEvents: [[String: Any]] { posts.filter { $0.status == 200 }.flatMap(\.events) }
}
