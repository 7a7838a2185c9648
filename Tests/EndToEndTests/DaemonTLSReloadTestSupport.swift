#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import PeregrineIO

/// Helpers for the certificate-renewal tests: throwaway certificates with
/// their own subject, the live files the daemon's config names, and clients
/// that report which certificate the daemon presented.
enum TLSReloadSupport {
    struct Certificate { let certificate, key, commonName: String }

    /// This suite's own loopback addresses: 127.P.200.(BACKEND*10 + host) (PrivateLoopback).
    static func ip(_ kind: BackendKind, host: Int) -> String {
        let b = (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1
        return PrivateLoopback.address(200, b * 10 + host)
    }

    /// A self-signed P-256 certificate for `commonName` in `dir`.
    static func makeCertificate(_ dir: TestDirectory, _ name: String, commonName: String) throws -> Certificate {
        let cert = dir.file("\(name)-cert.pem"), key = dir.file("\(name)-key.pem")
        let (status, out) = runTool(findTool("openssl") ?? "/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                                            "-nodes", "-subj", "/CN=\(commonName)", "-days", "1",
                                                            "-keyout", key, "-out", cert], seconds: 60)
        guard status == 0 else { throw SinkTestError("openssl req failed: \(out)") }
        return Certificate(certificate: cert, key: key, commonName: commonName)
    }

    /// Copies a certificate and key over the files the config names (what a renewal does).
    static func install(_ c: Certificate, certificate: String, key: String) throws {
        for (from, to) in [(c.certificate, certificate), (c.key, key)] {
            guard let data = FileManager.default.contents(atPath: from) else { throw SinkTestError("cannot read \(from)") }
            try data.write(to: URL(fileURLWithPath: to))
        }
    }

    /// The SHA-256 fingerprint of a PEM certificate, lower-case hex without colons.
    static func fingerprint(_ certificate: String) throws -> String {
        let (status, out) = runTool(findTool("openssl") ?? "/usr/bin/openssl", ["x509", "-in", certificate, "-noout", "-fingerprint", "-sha256"])
        guard status == 0, let eq = out.firstIndex(of: "=") else { throw SinkTestError("openssl x509 failed: \(out)") }
        return out[out.index(after: eq)...].filter { $0 != ":" && !$0.isWhitespace }.lowercased()
    }

    /// smtplib: `python3 -c script IP PORT MODE [GOFILE RCPT]`. MODE starttls or
    /// implicit prints "FP <sha256 of the server certificate>"; plain prints
    /// "STARTTLS True|False". With GOFILE the client keeps its session open
    /// until that file exists, then sends one message to RCPT over it.
    static let clientScript = #"""
    import smtplib, ssl, sys, hashlib, os, time
    ip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    s = smtplib.SMTP_SSL(ip, port, context=ctx, timeout=30) if mode == "implicit" else smtplib.SMTP(ip, port, timeout=30)
    s.ehlo("renew.client.test")
    if mode == "plain":
        print("STARTTLS", s.has_extn("starttls"), flush=True)
    else:
        if mode == "starttls":
            s.starttls(context=ctx); s.ehlo("renew.client.test")
        print("FP", hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest(), flush=True)
    if len(sys.argv) > 5:
        deadline = time.time() + 60
        while not os.path.exists(sys.argv[4]):
            if time.time() > deadline: sys.exit("the test never created " + sys.argv[4])
            time.sleep(0.05)
        s.sendmail("sender@client.test", [sys.argv[5]], "Subject: held\r\n\r\nsent over a TLS session opened before the reload\r\n")
        print("SENT", flush=True)
    s.quit()
    """#

    /// One short client run: its output line ("FP …" / "STARTTLS …"), or what went wrong.
    static func probe(_ python: String, _ ip: String, _ port: UInt16, _ mode: String) -> String {
        let (status, out) = runTool(python, ["-c", clientScript, ip, String(port), mode], seconds: 60)
        let line = out.split(separator: "\n").first { $0.hasPrefix("FP ") || $0.hasPrefix("STARTTLS ") }
        return status == 0 ? line.map(String.init) ?? out : "exit \(status): \(out)"
    }

    /// `openssl s_client -starttls smtp -connect IP:PORT </dev/null`: its whole output (the subject is in it).
    static func sClient(_ openssl: String, _ ip: String, _ port: UInt16) -> String {
        runTool(openssl, ["s_client", "-starttls", "smtp", "-connect", "\(ip):\(port)"], stdin: "", seconds: 30).1
    }
}
