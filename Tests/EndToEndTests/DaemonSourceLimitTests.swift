#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// PowerMTA's per-source session limits, judged by Python's smtplib on the
/// running daemon, one client address per `<source>`:
/// `max-errors-per-connection` (421 4.7.0 and close at the Nth error, while
/// other sources keep the top-level max-smtp-in-errors), `max-rcpt-per-message`
/// (452 4.5.3 past N), `allow-starttls no` (STARTTLS not offered to that
/// source while others see it). Scenario 173: 127.P.173.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonSourceLimitTests {
    static let script = #"""
import smtplib, sys
ip, port = sys.argv[1], int(sys.argv[2])
src = dict(a.split("=", 1) for a in sys.argv[3:])
def out(k, v): print(k, v, flush=True)
def client(name):
    s = smtplib.SMTP(ip, port, source_address=(src[name], 0), timeout=30)
    s.ehlo(name + ".client.test")
    return s
s = client("strict")
out("strict-starttls", "starttls" in s.esmtp_features)
out("strict-err1", s.docmd("FROB")[0])
out("strict-err2", s.docmd("FROB")[0])
# the 421 follows the second error's 500 at once, then the server closes
try:
    out("strict-after", s.getreply()[0])
except smtplib.SMTPServerDisconnected:
    out("strict-after", "disconnected")
s = client("loose")
out("loose-err1", s.docmd("FROB")[0])
out("loose-err2", s.docmd("FROB")[0])
out("loose-err3", s.docmd("FROB")[0])
out("loose-noop", s.docmd("NOOP")[0])
out("loose-starttls", "starttls" in s.esmtp_features)
s.quit()
s = client("few")
s.mail("a@src.test")
out("few-rcpt1", s.rcpt("r1@dst.test")[0])
out("few-rcpt2", s.rcpt("r2@dst.test")[0])
code, msg = s.rcpt("r3@dst.test")
out("few-rcpt3", code); out("few-rcpt3-text", msg.decode())
s.rset(); s.quit()
s = client("notls")
out("notls-starttls", "starttls" in s.esmtp_features)
s.quit()
print("DONE", flush=True)
"""#

    @Test(arguments: BackendKind.testable)
    func perSourceSessionLimitsOnTheWire(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let certificates = try #require(E2ETLSCertificates.files, "could not make a test certificate with openssl")
        let dir = try TestDirectory("source-limits-\(kind.rawValue)")
        let listen = E2E.ip(173, kind)
        let strict = E2E.ip(173, kind, host: 1), loose = E2E.ip(173, kind, host: 2)
        let few = E2E.ip(173, kind, host: 3), notls = E2E.ip(173, kind, host: 4)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            smtp-server-tls-certificate \(certificates.certificate)
            smtp-server-tls-key \(certificates.key)
            max-smtp-in-errors 10
            <source \(strict)/32>
                max-errors-per-connection 2
            </source>
            <source \(loose)/32>
                smtp-service yes
            </source>
            <source \(few)/32>
                always-allow-relaying yes
                max-rcpt-per-message 2
            </source>
            <source \(notls)/32>
                allow-starttls no
            </source>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let (status, output) = runTool(python, ["-c", Self.script, d.listenIP, String(d.listenPort), "strict=\(strict)",
                                                "loose=\(loose)", "few=\(few)", "notls=\(notls)"], seconds: 90)
        #expect(status == 0 && output.contains("DONE"), "\(output)\n\(d.log.suffix(2000))")
        var got: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { got[String(parts[0])] = String(parts[1]) }
        }
        #expect(got["strict-starttls"] == "True", "\(got)")
        #expect(got["strict-err1"] == "500", "\(got)")
        #expect(got["strict-err2"] == "500" && got["strict-after"] == "421", "\(got)")
        #expect(got["loose-err1"] == "500" && got["loose-err2"] == "500" && got["loose-err3"] == "500", "\(got)")
        #expect(got["loose-noop"] == "250", "\(got)")
        #expect(got["loose-starttls"] == "True", "\(got)")
        #expect(got["few-rcpt1"] == "250" && got["few-rcpt2"] == "250", "\(got)")
        #expect(got["few-rcpt3"] == "452" && got["few-rcpt3-text"]?.hasPrefix("4.5.3") == true, "\(got)")
        #expect(got["notls-starttls"] == "False", "\(got)")
    }
}
