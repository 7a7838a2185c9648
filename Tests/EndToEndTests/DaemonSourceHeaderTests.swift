#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// PowerMTA's header directives in `<source>`, on the running daemon with
/// Python's smtplib injecting: `jobid-header` names the job id header,
/// `retain-x-job no` removes it, `process-x-envid` takes the DSN envelope id
/// from `X-Envid:` (MAIL's ENVID= wins) and removes it, `remove-header`
/// removes the named headers. Judged from the `r` accounting records and
/// from the spooled bytes (the messages stay queued: their route is refused).
/// Scenario 172: 127.P.172.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonSourceHeaderTests {
    static let script = #"""
import smtplib, sys
ip, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(ip, port, source_address=(src, 0), timeout=30)
s.ehlo("headers.client.test")
one = (b"From: a@src.test\r\nTo: one@dst.test\r\nX-Campaign: camp-42\r\nX-Envid: env-7\r\n"
       b"X-Secret: s3cret-value\r\nX-Internal: internal-value\r\nX-Keep: kept-value-1\r\nSubject: one\r\n\r\nbody one\r\n")
s.sendmail("a@src.test", ["one@dst.test"], one)
two = (b"From: a@src.test\r\nTo: two@dst.test\r\nX-Campaign: camp-43\r\nX-Envid: header-env\r\n"
       b"X-Keep: kept-value-2\r\nSubject: two\r\n\r\nbody two\r\n")
s.sendmail("a@src.test", ["two@dst.test"], two, mail_options=["ENVID=mail-env"])
s.quit()
print("DONE", flush=True)
"""#

    @Test(arguments: BackendKind.testable)
    func sourceHeaderDirectivesShapeTheSpooledMessage(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("source-headers-\(kind.rawValue)")
        let listen = E2E.ip(172, kind), client = E2E.ip(172, kind, host: 1)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <source \(client)/32>
                always-allow-relaying yes
                default-virtual-mta vmta1
                jobid-header X-Campaign
                retain-x-job no
                process-x-envid yes
                remove-header X-Secret,X-Internal
            </source>
            <domain dst.test>
                route [\(listen)]:9
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let (status, output) = runTool(python, ["-c", Self.script, d.listenIP, String(d.listenPort), client], seconds: 90)
        #expect(status == 0 && output.contains("DONE"), "\(output)\n\(d.log.suffix(2000))")
        d.terminate()

        let received = accounting(dir.file("acct.csv")).of(.received)
        let one = received.first { $0.rcpt == "one@dst.test" }, two = received.first { $0.rcpt == "two@dst.test" }
        #expect(one?.jobId == "camp-42" && one?.envId == "env-7", "\(received)")
        #expect(two?.jobId == "camp-43" && two?.envId == "mail-env", "\(received)")

        var spooled = Data()
        let spool = dir.file("spool")
        for name in (try? FileManager.default.subpathsOfDirectory(atPath: spool)) ?? [] {
            if let data = FileManager.default.contents(atPath: spool + "/" + name) { spooled.append(data) }
        }
        func holds(_ text: String) -> Bool { spooled.range(of: Data(text.utf8)) != nil }
        #expect(holds("kept-value-1") && holds("kept-value-2"), "the messages are not in the spool")
        for gone in ["s3cret-value", "internal-value", "X-Campaign:", "X-Envid:", "header-env"] {
            #expect(!holds(gone), "'\(gone)' was spooled")
        }
    }
}
