import Foundation

/// isp-mix's side of the 2024 bulk-sender rules (issue 15): one RSA-2048 key
/// for the senders' domain, made with the openssl command for the run; the
/// private half goes into Peregrine's `domain-key`, the public half to the
/// sink's `--dkim-key`, so the gmail and yahoo profiles verify what arrives.
struct IspMixDKIM {
    /// The From and envelope domain of every message isp-mix injects: the
    /// signature's d= is aligned with From (DMARC) by construction.
    static let domain = "peregrine.test"
    static let selector = "isp"

    var privateKeyPath: String
    var publicKeyPath: String

    static func make(in directory: String) throws -> IspMixDKIM {
        guard let priv = makeBenchDKIMKey("rsa2048", in: directory) else {
            throw ScenarioRig.Failure(description: "openssl could not make an RSA-2048 DKIM key")
        }
        let pub = directory + "/dkim-rsa2048.pub.pem"
        guard BenchEnvironment.commandOutput("/usr/bin/openssl", ["pkey", "-in", priv, "-pubout", "-out", pub]) != nil,
              FileManager.default.fileExists(atPath: pub) else {
            throw ScenarioRig.Failure(description: "openssl could not write the public half of \(priv)")
        }
        return IspMixDKIM(privateKeyPath: priv, publicKeyPath: pub)
    }

    var sinkArguments: [String] { ["--dkim-key", "\(Self.domain):\(Self.selector):\(publicKeyPath)"] }

    /// Lines for Peregrine's `<source>` block: sign everything from 127/8 with the key.
    var configLines: String {
        "    domain-key \(Self.selector),\(Self.domain),\(privateKeyPath)\n    dkim-sign yes\n"
    }

    /// The sink's refusals for the bulk-sender rules, by rule name (from `/stats` totals).
    static func refusals(_ totals: [String: Any]) -> [String: Int] {
        var out: [String: Int] = [:]
        for key in ["messages_rejected", "messages_deferred"] {
            for (reason, n) in (totals[key] as? [String: Int]) ?? [:]
            where ["require-dkim", "require-dmarc-alignment", "require-list-unsubscribe"].contains(reason) {
                out[reason, default: 0] += n
            }
        }
        return out
    }

    /// The providers of this run whose rules the sink said it enforces (its start-up lines).
    static func enforcingProviders(sinkLog: String, providers: [String]) -> [String] {
        providers.filter { sinkLog.contains("<isp \($0)>: bulk-sender rules enforced") }
    }
}
