#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineAccounting

/// Issue 14, Accounting, through the daemon: the `vmtaPool` field names the
/// pool a message was injected for (empty when it named a VMTA), and an
/// `<acct-file |program>` with `record-fields` feeds a program the chosen
/// columns, header first.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonAccountingOptionsTests {
    @Test(arguments: BackendKind.testable)
    func vmtaPoolAndAPipeWithChosenFields(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try DaemonEndToEndTests.Scenario("acct-options", 154, kind)
        let mx = E2E.ip(154, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("acct", domains: "acct.test", mx: [mx]))
        s.sink = sink
        let (_, port) = try sink.address("acct")
        let out = s.dir.file("piped.csv")
        let program = s.dir.file("loader")
        // O_CLOEXEC: no program started meanwhile keeps it open (exec would fail with ETXTBSY).
        let fd = open(program, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        let script = Array("#!/bin/sh\nexec cat >> \(out)\n".utf8)
        _ = script.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, defaultVMTA: "pool1", """
            <acct-file |\(program)>
                records d
                record-fields delivery vmta,vmtaPool,rcpt
            </acct-file>
            <domain acct.test>
                route [\(mx)]:\(port)
            </domain>
            """))
        let c = try d.client()
        for m in 0..<4 { #expect(try c.send(to: ["a\(m)@acct.test"], id: "acct-\(m)") == nil) }
        #expect(try c.send(to: ["named@acct.test"], id: "acct-named", headers: ["X-Virtual-MTA: vmta2"]) == nil)
        c.quit()
        #expect(s.waitForFinals(5), "\(s.diagnostics)")
        let delivered = s.records.of(.delivered)
        let pooled = delivered.filter { $0.rcpt.hasPrefix("a") }
        #expect(pooled.count == 4 && pooled.allSatisfy { $0.vmtaPool == "pool1" }, "\(pooled.map { ($0.vmta, $0.vmtaPool) })")
        #expect(Set(pooled.map(\.vmta)) == ["vmta1", "vmta2"], "the pool rotates over its members")
        #expect(s.records.of(.received).filter { $0.rcpt.hasPrefix("a") }.allSatisfy { $0.vmtaPool == "pool1" })
        let named = try #require(delivered.first { $0.rcpt == "named@acct.test" })
        #expect(named.vmta == "vmta2" && named.vmtaPool.isEmpty)

        // The program got the header, then one line per delivery with only those columns.
        func piped() -> [String] {
            ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").components(separatedBy: "\r\n").filter { !$0.isEmpty }
        }
        #expect(E2E.waitUntil(20) { piped().count == 6 }, "\(piped())")
        d.terminate()
        let lines = piped()
        #expect(lines.first == "type,vmta,vmtaPool,rcpt", "\(lines)")
        for r in delivered {
            #expect(lines.contains("d,\(r.vmta),\(r.vmtaPool),\(r.rcpt)"), "\(r.rcpt) in \(lines)")
        }
    }
}
