#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// Certificate renewal without a restart, per backend, with the real
/// executables on loopback: the daemon starts with certificate A; the files
/// are overwritten with B and the daemon reloaded (`peregrine ctl reload` in
/// one test, SIGHUP in the other); new STARTTLS and implicit-TLS connections
/// see B while a connection opened before the reload still completes a
/// message over its session with A. A broken key then makes the reload fail
/// as a whole, reported with the key directive's file:line, and B stays in
/// service.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonTLSReloadTests {
    enum ReloadPath: String { case ctl, sighup }

    @Test(arguments: BackendKind.testable)
    func ctlReloadRenewsTheCertificate(_ kind: BackendKind) throws { try renewal(kind, via: .ctl) }

    @Test(arguments: BackendKind.testable)
    func sighupRenewsTheCertificate(_ kind: BackendKind) throws { try renewal(kind, via: .sighup) }

    /// Reloads `d` the chosen way: (succeeded, what was reported).
    func reload(_ d: DaemonProcess, via path: ReloadPath) -> (ok: Bool, report: String) {
        switch path {
        case .ctl:
            let host = String(d.management.split(separator: ":").first ?? "")
            let r = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", host, "--port", d.managementPort, "--token-file", d.tokenFile, "reload"], timeout: 30)
            return (r.status == 0, r.stdout + r.stderr)
        case .sighup:
            // The daemon logs one line per reload, once every loop runs on it ("reloaded …") or when it fails.
            func outcomes() -> [Substring] {
                d.log.split(separator: "\n").filter { $0.contains("peregrine: reloaded ") || $0.contains("peregrine: reload failed") }
            }
            let before = outcomes().count
            kill(d.process.processIdentifier, SIGHUP)
            E2E.waitUntil(30) { outcomes().count > before }
            let last = outcomes().count > before ? String(outcomes()[before]) : "no reload line in the log: \(d.log.suffix(2000))"
            return (last.contains("peregrine: reloaded "), last)
        }
    }

    func renewal(_ kind: BackendKind, via path: ReloadPath) throws {
        try kind.requireAvailable()
        let openssl = try #require(findTool("openssl"), "openssl not installed")
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("tls-reload-\(path.rawValue)-\(kind.rawValue)")
        let certA = try TLSReloadSupport.makeCertificate(dir, "a", commonName: "a.renewal.test")
        let certB = try TLSReloadSupport.makeCertificate(dir, "b", commonName: "b.renewal.test")
        let fpA = try TLSReloadSupport.fingerprint(certA.certificate), fpB = try TLSReloadSupport.fingerprint(certB.certificate)
        try #require(fpA != fpB)
        let liveCert = dir.file("live-cert.pem"), liveKey = dir.file("live-key.pem")
        try TLSReloadSupport.install(certA, certificate: liveCert, key: liveKey)

        let ip = TLSReloadSupport.ip(kind, host: path == .ctl ? 1 : 2)
        let sinkIP = TLSReloadSupport.ip(kind, host: path == .ctl ? 3 : 4)
        let sink = try startSink(dir, serviceIP: sinkIP, sinkProfile("renew", domains: "renew.test", mx: [sinkIP]))
        defer { sink.terminate() }
        let mx = try sink.address("renew")
        let tlsLines = """
            smtp-server-tls-certificate \(liveCert)
            smtp-server-tls-key \(liveKey)
            """
        func config(tls: String, implicitListener: Bool = true) -> String {
            daemonConfig(dir, listen: ip, """
                \(implicitListener ? "smtp-listener \(ip):2465 tls=yes" : "")
                \(tls)
                <domain renew.test>
                    route [\(mx.ip)]:\(mx.port)
                </domain>
                """)
        }
        let configPath = try dir.write("peregrine.conf", config(tls: tlsLines))
        let keyLine = try #require(config(tls: tlsLines).split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.contains("smtp-server-tls-key") }) + 1
        // Two loops: every loop must switch.
        let d = try DaemonProcess(configPath: configPath, backend: kind, threads: 2, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let diagnostics = { "daemon log:\n\(d.log.suffix(3000))" }

        // Certificate A on both listeners.
        #expect(TLSReloadSupport.sClient(openssl, ip, 2525).contains("CN = a.renewal.test"), "\(diagnostics())")
        #expect(TLSReloadSupport.probe(python, ip, 2525, "starttls") == "FP \(fpA)")
        #expect(TLSReloadSupport.probe(python, ip, 2465, "implicit") == "FP \(fpA)")
        let go = dir.file("go")
        let held = try HeldTLSClient(python, arguments: [ip, "2525", "starttls", go, "held@renew.test"])
        #expect(held.line(startingWith: "FP ") == "FP \(fpA)", "\(held.output)")

        // Renewal: new files, reload; new connections see B, on every loop. SO_REUSEPORT
        // picks the loop by a hash of the connection's addresses, which the test cannot
        // steer: it probes each listener until /status shows that every loop accepted
        // one of its probes (nothing else connects meanwhile), so no loop goes unasked.
        try TLSReloadSupport.install(certB, certificate: liveCert, key: liveKey)
        let renewed = reload(d, via: path)
        #expect(renewed.ok, "\(renewed.report)\n\(diagnostics())")
        func acceptedPerLoop() throws -> [Int] {
            let status = try E2E.json(E2E.httpGet(d.management, "/status"))
            return (status["loops"] as? [[String: Any]] ?? []).map { $0["inboundTotal"] as? Int ?? -1 }
        }
        for (port, mode) in [(UInt16(2525), "starttls"), (UInt16(2465), "implicit")] {
            let before = try acceptedPerLoop()
            try #require(before.count == 2, "per-loop counts in /status: \(before)")
            var probes = 0
            var now = before
            // 200 probes miss a loop with probability 2^-199: the bound is against hanging.
            while probes < 200 && !zip(now, before).allSatisfy({ $0 > $1 }) {
                #expect(TLSReloadSupport.probe(python, ip, port, mode) == "FP \(fpB)", "\(diagnostics())")
                probes += 1
                now = try acceptedPerLoop()
            }
            #expect(zip(now, before).allSatisfy { $0 > $1 },
                    "not every loop took a \(mode) probe: accepted per loop \(before) → \(now) after \(probes) probes")
        }
        let afterRenewal = TLSReloadSupport.sClient(openssl, ip, 2525)
        #expect(afterRenewal.contains("CN = b.renewal.test") && !afterRenewal.contains("a.renewal.test"), "\(afterRenewal)")

        // The connection opened before the reload finishes a message over its session with A.
        #expect(FileManager.default.createFile(atPath: go, contents: nil))
        #expect(held.line(startingWith: "SENT") == "SENT", "\(held.output)")
        #expect(held.finish() == 0, "\(held.output)")
        let acct = dir.file("acct.csv")
        #expect(E2E.waitUntil(30) { accounting(acct).of(.delivered).contains { $0.rcpt == "held@renew.test" } },
                "\(diagnostics())")

        // A broken key: the reload fails as a whole, naming the key's line and file; B stays in service.
        try "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".write(toFile: liveKey, atomically: true, encoding: .utf8)
        let broken = reload(d, via: path)
        #expect(!broken.ok, "\(broken.report)")
        #expect(broken.report.contains("peregrine.conf:\(keyLine): smtp-server-tls-key: ") && broken.report.contains(liveKey),
                "\(broken.report)")
        #expect(TLSReloadSupport.probe(python, ip, 2525, "starttls") == "FP \(fpB)", "\(diagnostics())")
        #expect(TLSReloadSupport.probe(python, ip, 2465, "implicit") == "FP \(fpB)", "\(diagnostics())")

        guard path == .ctl else { return }
        // A key that is not the certificate's (A's key with B's certificate): refused the same way.
        try TLSReloadSupport.install(certB, certificate: liveCert, key: liveKey)
        try FileManager.default.removeItem(atPath: liveKey)
        try FileManager.default.copyItem(atPath: certA.key, toPath: liveKey)
        let mismatched = reload(d, via: path)
        #expect(!mismatched.ok && mismatched.report.contains("peregrine.conf:\(keyLine): smtp-server-tls-key: ")
                && mismatched.report.contains("mismatch"), "\(mismatched.report)")
        // Turning TLS off while the tls=yes listener runs is refused (it would speak plain text to TLS clients).
        try TLSReloadSupport.install(certB, certificate: liveCert, key: liveKey)
        _ = try dir.write("peregrine.conf", config(tls: "", implicitListener: false))
        let dropped = reload(d, via: path)
        #expect(!dropped.ok && dropped.report.contains("runs with tls=yes until a restart"), "\(dropped.report)")
        #expect(TLSReloadSupport.probe(python, ip, 2465, "implicit") == "FP \(fpB)", "\(diagnostics())")
        #expect(TLSReloadSupport.probe(python, ip, 2525, "starttls") == "FP \(fpB)", "\(diagnostics())")
    }

    /// Without a `tls=yes` listener, TLS can be switched on and off by reload:
    /// STARTTLS is advertised to new connections once the certificate is
    /// configured, and no longer once it is removed.
    @Test(arguments: BackendKind.testable)
    func reloadTurnsSTARTTLSOnAndOff(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("tls-toggle-\(kind.rawValue)")
        let cert = try TLSReloadSupport.makeCertificate(dir, "c", commonName: "c.renewal.test")
        let fp = try TLSReloadSupport.fingerprint(cert.certificate)
        let ip = TLSReloadSupport.ip(kind, host: 5)
        func config(tls: Bool) -> String {
            daemonConfig(dir, listen: ip, tls ? "smtp-server-tls-certificate \(cert.certificate)\nsmtp-server-tls-key \(cert.key)" : "")
        }
        let d = try DaemonProcess(configPath: try dir.write("peregrine.conf", config(tls: false)), backend: kind, threads: 2,
                                  logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        #expect(TLSReloadSupport.probe(python, ip, 2525, "plain") == "STARTTLS False")

        _ = try dir.write("peregrine.conf", config(tls: true))
        let on = reload(d, via: .ctl)
        #expect(on.ok, "\(on.report)")
        for _ in 0..<4 { #expect(TLSReloadSupport.probe(python, ip, 2525, "starttls") == "FP \(fp)", "\(d.log.suffix(2000))") }

        _ = try dir.write("peregrine.conf", config(tls: false))
        let off = reload(d, via: .sighup)
        #expect(off.ok, "\(off.report)")
        for _ in 0..<4 { #expect(TLSReloadSupport.probe(python, ip, 2525, "plain") == "STARTTLS False") }
    }
}
