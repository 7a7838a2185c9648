#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineTestSupport

/// A minimal SMTP receiver in Python (real sockets, loopback): accepts every
/// message and writes each to DIR/N.eml, so a test can read the headers the
/// daemon added. Prints its port once listening.
let e2eCaptureReceiverScript = #"""
import socketserver, sys, os, threading
out = sys.argv[1]
count = [0]; lock = threading.Lock()
class H(socketserver.StreamRequestHandler):
    def w(self, s): self.wfile.write((s + "\r\n").encode()); self.wfile.flush()
    def handle(self):
        self.w("220 capture.test ESMTP")
        while True:
            line = self.rfile.readline()
            if not line: return
            cmd = line.decode("latin-1").strip().upper()
            if cmd.startswith("EHLO"): self.w("250-capture.test"); self.w("250-8BITMIME"); self.w("250 PIPELINING")
            elif cmd.startswith("DATA"):
                self.w("354 go"); body = []
                while True:
                    l = self.rfile.readline()
                    if not l or l == b".\r\n": break
                    body.append(l[1:] if l.startswith(b"..") else l)
                with lock:
                    count[0] += 1; n = count[0]
                with open(os.path.join(out, "%d.tmp" % n), "wb") as f: f.write(b"".join(body))
                os.rename(os.path.join(out, "%d.tmp" % n), os.path.join(out, "%d.eml" % n))
                self.w("250 2.0.0 captured %d" % n)
            elif cmd.startswith("QUIT"): self.w("221 bye"); return
            else: self.w("250 2.0.0 ok")
class S(socketserver.ThreadingTCPServer): allow_reuse_address = True; daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""#

/// The capture receiver as a child process (killed with the test process too).
final class CaptureReceiver {
    let process = Process()
    let directory: String
    let port: UInt16

    init() throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("peregrine-capture-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let out = Pipe()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", e2eCaptureReceiverScript, directory]
        process.standardOutput = out
        try ChildProcess.run(process)
        // The first line is the port it bound (port 0, read back).
        var line: [UInt8] = []
        let fd = out.fileHandleForReading.fileDescriptor
        var byte: UInt8 = 0
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, 100) > 0 else { if !process.isRunning { break }; continue }
            guard read(fd, &byte, 1) == 1 else { break }
            if byte == 10 { break }
            line.append(byte)
        }
        guard let port = UInt16(String(decoding: line, as: UTF8.self)) else {
            stopProcess(process, grace: 1)
            throw SinkTestError("the capture receiver did not start")
        }
        self.port = port
    }

    /// The captured messages, in arrival order.
    var messages: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".eml") }
            .sorted { Int($0.dropLast(4)) ?? 0 < Int($1.dropLast(4)) ?? 0 }
            .compactMap { try? String(contentsOfFile: directory + "/" + $0, encoding: .utf8) }
    }

    func stop() {
        stopProcess(process, grace: 1)
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }
}

/// smtplib against an AUTH-requiring daemon: `python3 -c script PORT STEP...`, one
/// line of output per step, `STEP RESULT`. Steps:
/// - `plaintext`: before STARTTLS AUTH is not advertised, and AUTH gets 538.
/// - `noauth`: after STARTTLS, MAIL without a login gets 530.
/// - `login:USER:PASS:RCPT[,RCPT]`: STARTTLS, login, send; prints the login
///   reply code, then each refused recipient's code, or `sent`.
let e2eAuthSmtplibScript = #"""
import smtplib, ssl, sys, base64
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def tls():
    s = smtplib.SMTP("127.0.0.1", port, timeout=60); s.ehlo("client.test")
    s.starttls(context=ctx); s.ehlo("client.test"); return s
for step in sys.argv[2:]:
    if step == "plaintext":
        s = smtplib.SMTP("127.0.0.1", port, timeout=60); s.ehlo("client.test")
        advertised = s.has_extn("auth")
        try:
            s.login("alice", "alice-pw"); how = "logged-in"
        except smtplib.SMTPNotSupportedError:
            how = "not-supported"
        code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0alice-pw").decode())
        print("plaintext", "advertised" if advertised else "hidden", how, code, msg.decode()); s.quit()
    elif step == "noauth":
        s = tls()
        try:
            s.sendmail("s@client.test", ["x@auth.test"], "Subject: no auth\r\n\r\nx\r\n"); print("noauth sent")
        except smtplib.SMTPSenderRefused as e:
            print("noauth", e.smtp_code, e.smtp_error.decode())
        s.quit()
    elif step.startswith("login:"):
        _, user, pw, rcpts = step.split(":", 3)
        s = tls()
        assert s.has_extn("auth"), "AUTH not advertised after STARTTLS"
        try:
            code, msg = s.login(user, pw)
        except smtplib.SMTPAuthenticationError as e:
            print("login", e.smtp_code, e.smtp_error.decode()); s.close(); continue
        print("login", code)
        try:
            refused = s.sendmail("s@client.test", rcpts.split(","), "Subject: auth test\r\nX-User: %s\r\n\r\nhello from %s\r\n" % (user, user))
            print("refused", " ".join("%s=%d" % (r, c[0]) for r, c in sorted(refused.items())) if refused else "none")
        except smtplib.SMTPRecipientsRefused as e:
            print("refused", " ".join("%s=%d" % (r, c[0]) for r, c in sorted(e.recipients.items())), "all")
        except smtplib.SMTPSenderRefused as e:
            print("mailrefused", e.smtp_code, e.smtp_error.decode())
        s.quit()
"""#

/// Brute force against a daemon with `smtp-auth-lockout-failures 2`:
/// `python3 -c script PORT OTHER_IP`. Client A sends a wrong password and
/// gets no answer yet (the failure delay); meanwhile client B logs in and
/// sends (the loop is not blocked); then A's 535 arrives. Client C fails
/// again: 454 and the connection closes. D, same address, right password:
/// still 454. E, another loopback address: logs in.
let e2eBruteForceScript = #"""
import smtplib, ssl, sys, base64, select
port, other = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def tls(source=None):
    s = smtplib.SMTP("127.0.0.1", port, timeout=90, source_address=(source, 0) if source else None)
    s.ehlo("bf.test"); s.starttls(context=ctx); s.ehlo("bf.test"); return s
def plain(u, p): return "PLAIN " + base64.b64encode(b"\0" + u.encode() + b"\0" + p.encode()).decode()
a = tls()
a.send("AUTH " + plain("alice", "wrong-1") + "\r\n")
b = tls()
code, _ = b.docmd("AUTH", plain("alice", "alice-pw")); print("B login", code)
b.sendmail("s@client.test", ["b@auth.test"], "Subject: during the delay\r\n\r\nx\r\n"); b.quit(); print("B sent")
ready = a.sock.pending() > 0 or select.select([a.sock], [], [], 0)[0]
print("A", "answered-early" if ready else "still-waiting")
code, msg = a.getreply(); print("A", code, msg.decode()); a.close()
c = tls()
code, msg = c.docmd("AUTH", plain("mallory", "guess")); print("C", code, msg.decode())
try:
    c.noop(); print("C open")
except smtplib.SMTPServerDisconnected:
    print("C closed")
d = tls()
code, msg = d.docmd("AUTH", plain("alice", "alice-pw")); print("D", code, msg.decode()); d.close()
e = tls(other)
code, msg = e.docmd("AUTH", plain("alice", "alice-pw")); print("E", code); e.quit()
"""#
