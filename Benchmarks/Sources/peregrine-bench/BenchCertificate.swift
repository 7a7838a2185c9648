import Foundation

/// A throwaway self-signed certificate made per run in the run's scratch
/// directory with the openssl command line (nothing secret is committed; the
/// directory goes away with the run). Delivery does not verify it, as MTAs
/// delivering with opportunistic STARTTLS do not.
struct BenchCertificate {
    let certificate: String
    let key: String

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// cert.pem/key.pem in `directory`, made once (a second call reuses them).
    static func make(in directory: String, commonName: String) throws -> BenchCertificate {
        let made = BenchCertificate(certificate: directory + "/cert.pem", key: directory + "/key.pem")
        if FileManager.default.fileExists(atPath: made.certificate) { return made }
        let p = BenchProcess(name: "openssl", executable: "/usr/bin/openssl",
                             arguments: ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(commonName)",
                                         "-days", "1", "-keyout", made.key, "-out", made.certificate],
                             logPath: directory + "/openssl.log")
        try p.start()
        _ = p.wait(timeout: 30)
        guard FileManager.default.fileExists(atPath: made.certificate) else {
            throw Failure(description: "openssl req failed: \(p.logTail)")
        }
        return made
    }

    /// The sink's arguments for it.
    var sinkArguments: [String] { ["--tls-cert", certificate, "--tls-key", key] }
}
