#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// `<source>` policy on the running daemon, judged by Python's smtplib (a
/// client nobody here wrote), one client address per block: relaying denied
/// (550 5.7.1 at RCPT), `smtp-service no` (554 at the greeting),
/// `max-message-size` (552 for SIZE= at MAIL and for a body over the limit),
/// Nothing refused reaches the spool. (`require-auth yes` is refused at config
/// load until SMTP AUTH exists: ConfigPeregrineErrorTests.)
/// Scenario 60: 127.P.60.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonSourcePolicyTests {
    static let script = #"""
import smtplib, sys
ip, port = sys.argv[1], int(sys.argv[2])
src = dict(a.split("=", 1) for a in sys.argv[3:])
def out(k, v): print(k, v, flush=True)
def client(name):
    s = smtplib.SMTP(ip, port, source_address=(src[name], 0), timeout=30)
    s.ehlo(name + ".client.test")
    return s
s = client("norelay")
out("norelay-mail", s.mail("a@src.test")[0])
code, msg = s.rcpt("norelay@dst.test")
out("norelay-rcpt", code); out("norelay-text", msg.decode())
s.quit()
try:
    smtplib.SMTP(ip, port, source_address=(src["noservice"], 0), timeout=30)
    out("noservice-greeting", 220)
except smtplib.SMTPConnectError as e:
    out("noservice-greeting", e.smtp_code); out("noservice-text", e.smtp_error.decode())
s = client("small")
out("small-size", s.esmtp_features.get("size", "-"))
out("small-mail-size", s.mail("a@src.test", ["SIZE=20000"])[0])
s.rset()
out("small-mail", s.mail("a@src.test")[0])
out("small-rcpt", s.rcpt("small@dst.test")[0])
body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 300
try:
    out("small-data", s.data(body)[0])
except smtplib.SMTPDataError as e:
    out("small-data", e.smtp_code)
try: s.quit()
except Exception: pass
print("DONE", flush=True)
"""#

    @Test(arguments: BackendKind.testable)
    func sourceBlocksAreEnforcedOnTheWire(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("source-policy-\(kind.rawValue)")
        let listen = E2E.ip(60, kind)
        let norelay = E2E.ip(60, kind, host: 1), noservice = E2E.ip(60, kind, host: 2)
        let small = E2E.ip(60, kind, host: 3)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <source \(norelay)/32>
                smtp-service yes
            </source>
            <source \(noservice)/32>
                smtp-service no
            </source>
            <source \(small)/32>
                always-allow-relaying yes
                max-message-size 10k
            </source>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let (status, output) = runTool(python, ["-c", Self.script, d.listenIP, String(d.listenPort),
                                                "norelay=\(norelay)", "noservice=\(noservice)", "small=\(small)"], seconds: 90)
        #expect(status == 0 && output.contains("DONE"), "\(output)\n\(d.log.suffix(2000))")
        var got: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { got[String(parts[0])] = String(parts[1]) }
        }
        #expect(got["norelay-mail"] == "250", "\(got)")
        #expect(got["norelay-rcpt"] == "550", "\(got)")
        #expect(got["norelay-text"]?.hasPrefix("5.7.1 ") == true && got["norelay-text"]?.contains("relaying denied") == true, "\(got)")
        #expect(got["noservice-greeting"] == "554", "\(got)")
        #expect(got["noservice-text"]?.hasPrefix("5.7.1 ") == true, "\(got)")
        #expect(got["small-size"] == "10240", "SIZE advertised: \(got)")
        #expect(got["small-mail-size"] == "552", "\(got)")
        #expect(got["small-mail"] == "250" && got["small-rcpt"] == "250", "\(got)")
        #expect(got["small-data"] == "552", "\(got)")
        // Stopped (the accounting file flushed and closed) before reading it: no refused
        // recipient was received.
        d.terminate()
        let received = accounting(dir.file("acct.csv")).of(.received).map(\.rcpt)
        #expect(received.isEmpty, "\(received)")
    }
}
