import Foundation

/// `relay --starttls`: a throwaway certificate for the MTA's listener and the
/// sink, STARTTLS required on delivery (so a plain-text delivery cannot pass
/// unnoticed), `--starttls` for loadgen.
extension RelayRunner {
    /// Creates cert.pem/key.pem in the work directory once; the sink's TLS arguments.
    func tlsSinkArguments() throws -> [String] {
        guard tls else { return [] }
        return try BenchCertificate.make(in: work, commonName: "relay.peregrine.test").sinkArguments
    }

    var tlsGlobalLines: String {
        tls ? "smtp-server-tls-certificate \(work)/cert.pem\nsmtp-server-tls-key \(work)/key.pem" : ""
    }

    var tlsDomainLines: String { tls ? "    require-starttls yes\n" : "" }

    /// TLS sessions as each side counted them.
    func tlsFigures(statsPort: UInt16) -> [String: Any] {
        let stats = BenchNet.getJSON(ip: ip, port: statsPort, path: "/stats")
        let total = stats?["totals"] as? [String: Any]
        return ["sinkSessionsTLS": total?["sessions_tls"] ?? 0, "sinkSessions": total?["sessions"] ?? 0,
                "sinkTLSHandshakeFailures": total?["tls_handshake_failures"] ?? 0]
    }

    /// The plain run's figures and what TLS costs relative to them (ratios TLS / plain).
    func tlsComparison(_ plain: RelayRun, _ tlsRun: RelayRun) -> [String: Any] {
        let keys = ["injectedPerSecond", "deliveredPerSecond", "mtaCpuSecondsPer10k", "mtaPeakRSSMB",
                    "sinkCpuPercent", "loadgenCpuPercent"]
        var figures: [String: Any] = ["lost": plain.lost, "duplicates": plain.duplicates]
        var ratios: [String: Double] = [:]
        for k in keys {
            guard let p = plain.figures[k] as? Double else { continue }
            figures[k] = p
            if let t = tlsRun.figures[k] as? Double, p > 0 { ratios[k] = t / p }
        }
        if let lat = plain.figures["injectToDeliverMs"] { figures["injectToDeliverMs"] = lat }
        if let e = plain.error { figures["error"] = e }
        return ["figures": figures, "tlsOverPlain": ratios]
    }
}
