#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// PowerMTA's routing directives end to end, judged by what a Python
/// receiver got: `verp-default` and XVERP (Python smtplib's mail_options)
/// give each recipient its own transaction and return path; `queue-to`
/// puts two domains into one queue that `smtp-hosts` delivers (past a host
/// that refuses connections); `max-msg-rate 0` holds a domain's mail until a
/// reload raises the rate. Scenarios 22 and 23.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonPowerMTARoutingTests {
    static let verpScript = #"""
import smtplib, sys
ip, port, verp_src, plain_src = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def body(tag):
    return ("From: news@esp.example\r\nSubject: " + tag + "\r\n\r\nbody\r\n").encode()
s = smtplib.SMTP(ip, port, source_address=(verp_src, 0), timeout=30)
s.ehlo("verp.client.test")
s.sendmail("news@esp.example", ["a@verp.test", "b+tag@verp.test"], body("default"))
s.quit()
s = smtplib.SMTP(ip, port, source_address=(plain_src, 0), timeout=30)
s.ehlo("plain.client.test")
s.sendmail("list-bounces@esp.example", ["c@verp.test", "d@verp.test"], body("xverp"), mail_options=["XVERP"])
s.sendmail("news@esp.example", ["e@verp.test", "f@verp.test"], body("plain"))
s.quit()
print("DONE", flush=True)
"""#

    @Test(arguments: BackendKind.testable)
    func verpGivesEachRecipientItsReturnPath(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("pmta-verp-\(kind.rawValue)")
        let receiver = try RecordingReceiver(dir, ip: E2E.ip(22, kind, host: 5))
        defer { receiver.terminate() }
        let listen = E2E.ip(22, kind), verpClient = E2E.ip(22, kind, host: 1), plainClient = E2E.ip(22, kind, host: 2)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <source \(verpClient)/32>
                always-allow-relaying yes
                verp-default yes
            </source>
            <domain verp.test>
                route [\(receiver.ip)]:\(receiver.port)
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let (status, output) = runTool(python, ["-c", Self.verpScript, d.listenIP, String(d.listenPort), verpClient, plainClient],
                                       seconds: 90)
        #expect(status == 0 && output.contains("DONE"), "\(output)\n\(d.log.suffix(2000))")
        // Four VERP transactions and one plain one with two recipients.
        #expect(E2E.waitUntil(60) { receiver.messages.count == 5 }, "\(receiver.messages.map(\.rcpts))\n\(d.log.suffix(2000))")
        var returnPath: [String: String] = [:]
        for m in receiver.messages { for r in m.rcpts { returnPath[r] = m.mailFrom } }
        #expect(returnPath["a@verp.test"] == "news+a=verp.test@esp.example", "\(returnPath)")
        #expect(returnPath["b+tag@verp.test"] == "news+b+tag=verp.test@esp.example", "\(returnPath)")
        #expect(returnPath["c@verp.test"] == "list-bounces+c=verp.test@esp.example", "\(returnPath)")
        #expect(returnPath["d@verp.test"] == "list-bounces+d=verp.test@esp.example", "\(returnPath)")
        let plain = receiver.messages.filter { $0.rcpts.contains("e@verp.test") }
        #expect(plain.count == 1 && plain.first?.rcpts.sorted() == ["e@verp.test", "f@verp.test"]
                && plain.first?.mailFrom == "news@esp.example", "\(plain.map { ($0.mailFrom, $0.rcpts) })")
        #expect(receiver.messages.filter { $0.rcpts.count != 1 }.count == 1, "only the plain message has two recipients")
        d.terminate()
        // Accounting keeps the sender as injected (orig), one d record per recipient.
        let delivered = accounting(dir.file("acct.csv")).of(.delivered)
        #expect(delivered.count == 6 && delivered.first { $0.rcpt == "c@verp.test" }?.orig == "list-bounces@esp.example",
                "\(delivered.map { ($0.rcpt, $0.orig) })")
    }

    @Test(arguments: BackendKind.testable)
    func queueToSMTPHostsAndZeroRate(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("pmta-route-\(kind.rawValue)")
        let receiver = try RecordingReceiver(dir, ip: E2E.ip(23, kind, host: 5))
        defer { receiver.terminate() }
        // Nothing listens here: connections are refused and the next host is tried.
        let deadHost = E2E.ip(23, kind, host: 6)
        let listen = E2E.ip(23, kind)
        func config(trapRate: String) -> String {
            daemonConfig(dir, listen: listen, """
                domain-macro hot hot1.test,hot2.test
                <domain $hot>
                    queue-to hot.queue
                </domain>
                <domain hot.queue>
                    smtp-hosts [\(deadHost)]:2525, [\(receiver.ip)]:\(receiver.port)
                    retry-after 1h
                </domain>
                <domain trap.test>
                    max-msg-rate \(trapRate)
                    smtp-hosts [\(receiver.ip)]:\(receiver.port)
                    retry-after 1h
                </domain>
                """)
        }
        let configPath = try dir.write("peregrine.conf", config(trapRate: "0"))
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        // The held message goes first: had the rate not held it, it would be delivered before the others.
        #expect(try c.send(to: ["held@trap.test"], id: "held") == nil)
        #expect(try c.send(to: ["a@hot1.test", "b@hot2.test"], id: "hot") == nil)
        #expect(E2E.waitUntil(60) { Set(receiver.messages.flatMap(\.rcpts)) == ["a@hot1.test", "b@hot2.test"] },
                "\(receiver.messages.map(\.rcpts))\n\(d.log.suffix(2000))")
        // Accounting is flushed a moment after delivery: wait for the records.
        #expect(E2E.waitUntil(30) { accounting(dir.file("acct.csv")).of(.delivered).count >= 2 })
        let records = accounting(dir.file("acct.csv"))
        let hot = records.of(.delivered).filter { $0.rcpt.hasSuffix("hot1.test") || $0.rcpt.hasSuffix("hot2.test") }
        #expect(hot.count == 2 && hot.allSatisfy { $0.queue.hasPrefix("hot.queue/") }, "\(hot.map { ($0.rcpt, $0.queue) })")
        #expect(hot.allSatisfy { $0.dlvDestinationIp == receiver.ip }, "\(hot.map(\.dlvDestinationIp))")
        #expect(!records.finals.contains { $0.rcpt == "held@trap.test" }, "\(records.map { ($0.type, $0.rcpt) })")
        #expect(!receiver.messages.contains { $0.rcpts.contains("held@trap.test") })

        // A reload that raises the rate releases the held message: it was kept, not dropped.
        _ = try dir.write("peregrine.conf", config(trapRate: "10/s"))
        #expect((try d.ctl(["reload"])["reloaded"] as? Bool) == true)
        #expect(E2E.waitUntil(60) { receiver.messages.contains { $0.rcpts.contains("held@trap.test") } }, "\(d.log.suffix(2000))")
        c.quit()
    }

    /// `<rewrite-list>` at injection: the envelope sender, the From address
    /// (display name kept) and a recipient are rewritten before the spool,
    /// and the DKIM signature, made at injection, is for the new From
    /// domain and verifies with dkimpy. Scenario 24.
    @Test(arguments: BackendKind.testable)
    func rewriteListRewritesBeforeSpoolAndSigning(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("pmta-rewrite-\(kind.rawValue)")
        let receiver = try RecordingReceiver(dir, ip: E2E.ip(24, kind, host: 5))
        defer { receiver.terminate() }
        let key = try DKIMExternalVerifiers.makeKey(.ed25519, name: "brand", in: dir.path)
        let listen = E2E.ip(24, kind), client = E2E.ip(24, kind, host: 1)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <rewrite-list brand>
                mail-from *@old.example *@new.example
                header-from *@old.example news@new.example
                rcpt-to *@legacy.test *@rw.test
            </rewrite-list>
            <source \(client)/32>
                always-allow-relaying yes
                rewrite-list brand
                domain-key brand,new.example,\(key.privateKeyPath)
            </source>
            <domain rw.test>
                route [\(receiver.ip)]:\(receiver.port)
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let python = try #require(findTool("python3"), "python3 not installed")
        let script = #"""
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), source_address=(sys.argv[3], 0), timeout=30)
s.sendmail("bounce@old.example", ["ann@legacy.test"],
           b"From: \"Old Shop\" <shop@old.example>\r\nTo: ann@legacy.test\r\nSubject: rewritten\r\n\r\nbody\r\n")
s.quit()
print("DONE", flush=True)
"""#
        let (status, output) = runTool(python, ["-c", script, d.listenIP, String(d.listenPort), client], seconds: 60)
        #expect(status == 0 && output.contains("DONE"), "\(output)\n\(d.log.suffix(2000))")
        #expect(E2E.waitUntil(60) { receiver.messages.count == 1 }, "\(d.log.suffix(2000))")
        let m = try #require(receiver.messages.first)
        #expect(m.mailFrom == "bounce@new.example" && m.rcpts == ["ann@rw.test"], "\(m.mailFrom) \(m.rcpts)")
        let headers = m.data.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
        #expect(headers.filter { $0.lowercased().hasPrefix("from:") } == ["From: \"Old Shop\" <news@new.example>"], "\(headers)")
        #expect(headers.contains { $0.hasPrefix("To: ann@legacy.test") }, "headers other than From are the client's")
        #expect(headers.contains { $0.hasPrefix("DKIM-Signature:") && $0.contains("d=new.example") }, "\(headers)")
        let scratch = dir.file("verify")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let verified = try DKIMExternalVerifiers.dkimpy([Array(m.data.utf8)], records: ["brand._domainkey.new.example": key.record],
                                                        directory: scratch)
        #expect(verified == [true], "dkimpy: \(verified)")
    }

    /// `dummy-smtp-port`: the daemon's own discard listener takes the mail a
    /// test domain is routed to, answers 250 and keeps nothing. Scenario 25.
    @Test(arguments: BackendKind.testable)
    func dummySMTPPortAcceptsAndDiscards(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("pmta-dummy-\(kind.rawValue)")
        let listen = E2E.ip(25, kind), dummy = E2E.ip(25, kind, host: 3)
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            dummy-smtp-port \(dummy):2526
            <domain discard.test>
                route [\(dummy)]:2526
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: config, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        #expect(try c.send(to: ["a@discard.test", "b@discard.test"], id: "dummy-1") == nil)
        #expect(try c.send(to: ["c@discard.test"], id: "dummy-2") == nil)
        c.quit()
        #expect(E2E.waitUntil(60) { accounting(dir.file("acct.csv")).of(.delivered).count == 3 }, "\(d.log.suffix(2000))")
        let delivered = accounting(dir.file("acct.csv")).of(.delivered)
        #expect(delivered.allSatisfy { $0.dlvDestinationIp == dummy && $0.dsnDiag.contains("discarded (dummy-smtp-port)") },
                "\(delivered.map { ($0.dlvDestinationIp, $0.dsnDiag) })")
        // Discarded means not spooled again: only the three injected recipients were ever received.
        #expect(accounting(dir.file("acct.csv")).of(.received).count == 3)
    }
}
