#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// `tls-verify-hostname` end to end (TEST-AUDIT §5 item 10): two private
/// Postfix instances offer STARTTLS with certificates from a test CA, one for
/// the MX's own address, one for another name. The daemon trusts that CA
/// (SSL_CERT_FILE, which OpenSSL's default verify paths read) and requires
/// STARTTLS: it delivers to the right certificate, refuses the wrong one
/// (a deferral, nothing delivered), and without verification the same wrong
/// certificate is accepted, so the refusal is the hostname check's doing.
/// Scenario 185.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonTLSVerifyHostnameTests {
    struct TestCA {
        let ca: String, caKey: String
        /// A certificate for `subject` with the given subjectAltName, signed by the CA: (certificate, key).
        func issue(_ dir: TestDirectory, _ name: String, subject: String, altNames: String) throws -> (String, String) {
            let openssl = findTool("openssl") ?? "/usr/bin/openssl"
            let key = dir.file("\(name)-key.pem"), csr = dir.file("\(name).csr"), cert = dir.file("\(name)-cert.pem")
            let ext = try dir.write("\(name).ext", "subjectAltName=\(altNames)\n")
            var (status, out) = runTool(openssl, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                                  "-subj", "/CN=\(subject)", "-keyout", key, "-out", csr])
            guard status == 0 else { throw SinkTestError("openssl req: \(out)") }
            (status, out) = runTool(openssl, ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial",
                                              "-days", "1", "-out", cert, "-extfile", ext])
            guard status == 0 else { throw SinkTestError("openssl x509 -req: \(out)") }
            chmod(key, 0o644)  // Postfix's smtpd reads it as the postfix user
            return (cert, key)
        }

        static func make(_ dir: TestDirectory) throws -> TestCA {
            let ca = dir.file("ca.pem"), key = dir.file("ca-key.pem")
            let (status, out) = runTool(findTool("openssl") ?? "/usr/bin/openssl",
                                        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                         "-subj", "/CN=Peregrine Test CA", "-days", "1", "-keyout", key, "-out", ca,
                                         "-addext", "basicConstraints=critical,CA:TRUE",
                                         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            guard status == 0 else { throw SinkTestError("openssl req -x509 (CA): \(out)") }
            return TestCA(ca: ca, caKey: key)
        }
    }

    @Test(arguments: BackendKind.testable)
    func theDaemonDeliversToTheRightCertificateAndRefusesTheWrongOne(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 185
        let s = try DaemonEndToEndTests.Scenario("tls-verify", scenario, kind)
        let rightIP = E2E.ip(scenario, kind, host: 1), wrongIP = E2E.ip(scenario, kind, host: 2)
        let ca = try TestCA.make(s.dir)
        let right = try ca.issue(s.dir, "right", subject: rightIP, altNames: "IP:\(rightIP)")
        let wrong = try ca.issue(s.dir, "wrong", subject: "wrong.peregrine.test", altNames: "DNS:wrong.peregrine.test,IP:127.0.0.99")
        let rightDir = try TestDirectory("tls-verify-right-\(kind.rawValue)")
        let wrongDir = try TestDirectory("tls-verify-wrong-\(kind.rawValue)")
        let pfRight = try DaemonPostfixReceiverTests.startPostfix(rightDir, ip: rightIP, extra: "",
            environment: ["POSTFIX_TLS_CERT": right.0, "POSTFIX_TLS_KEY": right.1])
        defer { DaemonPostfixReceiverTests.stopPostfix(pfRight) }
        let pfWrong = try DaemonPostfixReceiverTests.startPostfix(wrongDir, ip: wrongIP, extra: "",
            environment: ["POSTFIX_TLS_CERT": wrong.0, "POSTFIX_TLS_KEY": wrong.1])
        defer { DaemonPostfixReceiverTests.stopPostfix(pfWrong) }
        chmod(s.dir.path, 0o755)
        let tls = """
                use-starttls yes
                require-starttls yes
                retry-after 1h
            """
        let config = daemonConfig(s.dir, listen: s.listenIP, """
            <domain right.pf.test>
                route [\(rightIP)]:2525
            \(tls)
                tls-verify-hostname yes
            </domain>
            <domain wrong.pf.test>
                route [\(wrongIP)]:2525
            \(tls)
                tls-verify-hostname yes
            </domain>
            <domain unverified.pf.test>
                route [\(wrongIP)]:2525
            \(tls)
                tls-verify-hostname no
            </domain>
            """)
        let path = try s.dir.write("peregrine.conf", config)
        // The daemon (only it) trusts the test CA.
        let d = try DaemonProcess(configPath: path, backend: kind, threads: 1, logPath: s.dir.file("daemon.log"),
                                  launcher: ["/usr/bin/env", "SSL_CERT_FILE=\(ca.ca)"])
        s.daemon = d
        let c = try d.client()
        #expect(try c.send(to: ["a@right.pf.test"], id: "verify-right") == nil)
        #expect(try c.send(to: ["b@wrong.pf.test"], id: "verify-wrong") == nil)
        #expect(try c.send(to: ["c@unverified.pf.test"], id: "verify-off") == nil)
        c.quit()
        let settled = E2E.waitUntil(60, every: 0.2) {
            let r = s.records
            return r.of(.delivered).contains { $0.rcpt == "a@right.pf.test" }
                && r.of(.delivered).contains { $0.rcpt == "c@unverified.pf.test" }
                && r.contains { ($0.type == .transient || $0.type == .bounced) && $0.rcpt == "b@wrong.pf.test" }
        }
        #expect(settled, "\(s.diagnostics)")
        let records = s.records
        for rcpt in ["a@right.pf.test", "c@unverified.pf.test"] {
            let r = records.of(.delivered).first { $0.rcpt == rcpt }
            #expect(r?.dlvTlsProtocol.hasPrefix("TLSv1.") == true, "\(rcpt): \(String(describing: r?.dlvTlsProtocol))")
        }
        #expect(!records.of(.delivered).contains { $0.rcpt == "b@wrong.pf.test" }, "delivered over a certificate for another name")
        let refused = records.filter { $0.rcpt == "b@wrong.pf.test" && $0.type != .received }
        #expect(refused.allSatisfy { $0.type == .transient }, "a failed verification defers: \(refused.map(\.type))")
        #expect(refused.contains { $0.dsnDiag.lowercased().contains("certificate") || $0.dsnDiag.lowercased().contains("verif") },
                "\(refused.map(\.dsnDiag))")
        // Postfix saw no mail transaction on the wrong certificate's instance.
        let wrongLog = DaemonPostfixReceiverTests.maillog(pfWrong)
        #expect(wrongLog.components(separatedBy: "client=").count - 1 == 1, "only the unverified delivery: \(wrongLog.suffix(2000))")
    }
}
