#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// An SMTP receiver in Python (socketserver, a thread per connection) that
/// keeps every message it accepts, envelope and bytes, one JSON line each,
/// and answers recipients by their local part: `bad…` get Gmail's
/// `550-5.1.1` (a bounce), `slow…` get `450 4.2.1` (deferred until expiry),
/// everything else 250. The DSN tests use it as both the recipients' MX and
/// the sender's (where the bounce report arrives).
final class RecordingReceiver {
    let ip: String
    var port: UInt16 { server.port }
    let messagesPath: String
    private let server: PythonServerProcess

    static let script = #"""
    import socketserver, sys, threading, json
    ip, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(120)
            s.sendall(b"220 recording.test ESMTP\r\n")
            pending, data, in_data, mail, rcpts = b"", [], False, None, []
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\r\n" in pending:
                        line, pending = pending.split(b"\r\n", 1)
                        if in_data:
                            if line == b".":
                                in_data = False
                                body = b"".join(l[1:] + b"\r\n" if l.startswith(b".") else l + b"\r\n" for l in data)
                                with lock:
                                    with open(out, "a") as f:
                                        f.write(json.dumps({"mail_from": mail, "rcpts": rcpts,
                                                            "data": body.decode("latin-1")}) + "\n")
                                data, mail, rcpts = [], None, []
                                s.sendall(b"250 2.0.0 kept\r\n")
                            else:
                                data.append(line)
                            continue
                        verb = line[:4].upper()
                        text = line.decode("latin-1")
                        if verb == b"EHLO":
                            s.sendall(b"250-recording.test\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                        elif verb == b"HELO":
                            s.sendall(b"250 recording.test\r\n")
                        elif verb == b"MAIL":
                            mail = text[text.index("<") + 1:text.index(">")]
                            rcpts = []
                            s.sendall(b"250 2.1.0 ok\r\n")
                        elif verb == b"RCPT":
                            addr = text[text.index("<") + 1:text.index(">")]
                            local = addr.split("@")[0]
                            if local.startswith("bad"):
                                s.sendall(b"550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                                          b"550 5.1.1 Please try double-checking the recipient's email address.\r\n")
                            elif local.startswith("slow"):
                                s.sendall(b"450 4.2.1 mailbox busy, try again later\r\n")
                            else:
                                rcpts.append(addr)
                                s.sendall(b"250 2.1.5 ok\r\n")
                        elif verb == b"DATA":
                            if rcpts:
                                in_data = True
                                s.sendall(b"354 go ahead\r\n")
                            else:
                                s.sendall(b"554 5.5.1 no valid recipients\r\n")
                        elif verb == b"RSET":
                            mail, rcpts = None, []
                            s.sendall(b"250 ok\r\n")
                        elif verb == b"QUIT":
                            s.sendall(b"221 bye\r\n")
                            return
                        else:
                            s.sendall(b"250 ok\r\n")
            except OSError:
                pass

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 128

    server = Server((ip, port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    struct Message {
        var mailFrom: String
        var rcpts: [String]
        var data: String
    }

    /// `port` 0: the kernel picks one (read back as `port`); a fixed port
    /// only on an address of the test's own (PrivateLoopback).
    init(_ dir: TestDirectory, ip: String, port: UInt16 = 0, tag: String = "recording") throws {
        self.ip = ip
        messagesPath = dir.file("\(tag)-messages.jsonl")
        FileManager.default.createFile(atPath: messagesPath, contents: nil)
        server = try PythonServerProcess(dir, tag: tag, script: Self.script, arguments: [ip, "\(port)", messagesPath],
                                         what: "recording receiver on \(ip)")
    }

    /// Every message kept so far.
    var messages: [Message] {
        let text = (try? String(contentsOfFile: messagesPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let from = o["mail_from"] as? String, let rcpts = o["rcpts"] as? [String],
                  let data = o["data"] as? String else { return nil }
            return Message(mailFrom: from, rcpts: rcpts, data: data)
        }
    }

    func terminate() { server.terminate() }
}

/// Parses a delivery status notification with Python's `email` package (an
/// independent reader) and returns what it found: the report's content type
/// and report-type, the per-message and per-recipient fields of its
/// message/delivery-status part, and the type and text of the returned part.
func parseDSNWithPython(_ dir: TestDirectory, _ message: String) throws -> [String: Any] {
    let python = try #require(findTool("python3"), "python3 not installed")
    let script = #"""
    import sys, json, email, email.policy
    raw = open(sys.argv[1], "rb").read()
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = {"content_type": msg.get_content_type(), "report_type": msg.get_param("report-type"),
           "to": msg["To"], "from": msg["From"], "subject": msg["Subject"],
           "auto_submitted": msg["Auto-Submitted"], "defects": [str(d) for d in msg.defects]}
    parts = msg.get_payload()
    out["part_types"] = [p.get_content_type() for p in parts]
    status = parts[1].get_payload()
    out["per_message"] = dict(status[0].items())
    out["per_recipient"] = [dict(r.items()) for r in status[1:]]
    returned = parts[2]
    if returned.get_content_type() == "message/rfc822":
        inner = returned.get_payload()[0]
        out["returned_subject"] = inner["Subject"]
        out["returned_body"] = inner.get_payload()
    else:
        text = returned.get_payload()
        out["returned_subject"] = email.message_from_string(text)["Subject"]
        out["returned_body"] = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else ""
    for p in [msg] + parts:
        out["defects"] += [str(d) for d in p.defects]
    print(json.dumps(out))
    """#
    let scriptPath = try dir.write("parse-dsn.py", script)
    let messagePath = dir.file("dsn-\(UUID().uuidString.prefix(8)).eml")
    try Data(message.utf8).write(to: URL(fileURLWithPath: messagePath))
    let r = E2E.run(python, [scriptPath, messagePath], timeout: 30)
    guard r.status == 0 else { throw SinkTestError("python could not parse the DSN: \(r.stderr)\n\(message)") }
    return try E2E.json(Data(r.stdout.utf8))
}
