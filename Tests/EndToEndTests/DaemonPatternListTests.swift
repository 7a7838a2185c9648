#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// PowerMTA's `<pattern-list>` choosing the virtual-mta of injected mail by
/// envelope sender or header, with smtplib injecting: the `r` records name
/// the chosen VMTA; `//` catches the rest; an `X-Virtual-MTA:` header still
/// wins. Scenario 175: 127.P.175.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonPatternListTests {
    static let script = #"""
import smtplib, sys
ip, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(ip, port, source_address=(src, 0), timeout=30)
s.ehlo("patterns.client.test")
def send(sender, rcpt, extra=b""):
    s.sendmail(sender, [rcpt], b"From: " + sender.encode() + b"\r\n" + extra + b"Subject: t\r\n\r\nbody\r\n")
send("news@bulk.example", "a@dst.test")
send("someone@else.example", "b@dst.test", b"X-Campaign: txn-123\r\n")
send("someone@else.example", "c@dst.test")
send("news@bulk.example", "d@dst.test", b"X-Virtual-MTA: vmta1\r\n")
s.quit()
print("DONE", flush=True)
"""#

    @Test(arguments: BackendKind.testable)
    func patternListsChooseTheVirtualMTA(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("pattern-list-\(kind.rawValue)")
        let listen = E2E.ip(175, kind), client = E2E.ip(175, kind, host: 1)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <virtual-mta bulk1>
                smtp-source-host 127.0.0.12 bulk1.test
            </virtual-mta>
            <virtual-mta txn1>
                smtp-source-host 127.0.0.13 txn1.test
            </virtual-mta>
            <pattern-list senders>
                mail-from /@bulk\\.example$/ virtual-mta=bulk1
                header X-Campaign /^txn-/ virtual-mta=txn1
                mail-from // virtual-mta=pool1
            </pattern-list>
            <source \(client)/32>
                always-allow-relaying yes
                process-x-virtual-mta yes
                pattern-list senders
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
        var vmta: [String: String] = [:]
        for r in accounting(dir.file("acct.csv")).of(.received) { vmta[r.rcpt] = r.vmta }
        #expect(vmta["a@dst.test"] == "bulk1", "\(vmta)")
        #expect(vmta["b@dst.test"] == "txn1", "\(vmta)")
        #expect(vmta["c@dst.test"] == "vmta1" || vmta["c@dst.test"] == "vmta2", "the pool's members: \(vmta)")
        #expect(vmta["d@dst.test"] == "vmta1", "X-Virtual-MTA wins: \(vmta)")
    }
}
