import Foundation
import PeregrineIO
#if canImport(Glibc)
import Glibc
#endif

/// `peregrine-bench relay-esp` (issue 18): the ESP workload. loadgen → Peregrine
/// → sink, 4 KB, durable spool, every message DKIM-signed at injection
/// (rsa-sha256 2048 by default; `--dkim ed25519|dual`) and delivered over
/// STARTTLS (the sink has a certificate and the MTA must use it), optionally
/// STARTTLS on injection too. In one invocation, per backend: the plain relay,
/// the same relay with the same TLS and no DKIM, then the ESP run at each
/// `--threads` count. Postfix cannot sign without a milter, so the in-run
/// reference is the crypto bound: `openssl speed` for the key (measured after
/// each ESP run) and the TLS-only run for what TLS costs.
///
/// DKIM overhead ratio = (ESP CPU per message − TLS-only CPU per message) ÷
/// the in-run raw sign time (for dual: RSA + Ed25519). 1.0 means signing
/// costs exactly OpenSSL's raw signature. The issue's literal form, minus the
/// plain relay's CPU, is recorded too (`dkimOverheadRatioOverPlain`): it also
/// counts TLS. The sign path ratio = the daemon's own signing time per
/// message (its /metrics histogram) ÷ the raw sign time: the signing code
/// alone, whatever the rest of the relay does at that rate.
struct RelayESPOptions: RelayScenarioOptions {
    var backends: [BackendKind] = [.epoll]
    var duration = 20.0
    var connections = 32
    var dkim = "rsa2048"
    var threads: [Int] = [1, 2]
    var injectionTLS = false
    /// `--rate N`: every run of the invocation injects at N messages/s (open loop), so
    /// the DKIM run's CPU per message is compared with the TLS-only run's at the same
    /// rate, not at the TLS-only run's higher one (per-message CPU depends on the rate).
    var rate: Double?
    var outputDir = "results"
    var writeResults = true
    var ip = BenchNet.runAddress

    static let usage = """
    usage: peregrine-bench relay-esp [--backend all|io_uring|epoll|dispatch] [--duration S] [--connections N]
                                     [--dkim rsa2048|ed25519|dual] [--threads 1,2] [--injection-tls]
                                     [--rate MSG_PER_S] [--ip 127.X.Y.Z] [--output-dir DIR] [--no-results]
    Per backend, in one run: plain relay, relay with the same STARTTLS and no DKIM, then
    the ESP run (DKIM + STARTTLS on delivery) at each thread count; openssl speed after each ESP run.
    """

    static func parse(_ args: [String]) -> Result<RelayESPOptions, BenchUsageError> {
        var o = RelayESPOptions()
        let error = RelayOptionParser.parse(args, into: &o) { o, option, value in
            switch option {
            case "--dkim":
                switch RelayOptionParser.dkim(value) {
                case .success(let v): o.dkim = v
                case .failure(let e): return .failure(e)
                }
            case "--threads":
                guard let v = value else { return .failure(BenchUsageError("--threads needs a list like 1,2")) }
                let list = v.split(separator: ",").compactMap { Int($0) }
                guard !list.isEmpty, list.count == v.split(separator: ",").count, list.allSatisfy({ $0 > 0 }) else {
                    return .failure(BenchUsageError("--threads needs a list of counts like 1,2"))
                }
                o.threads = list
            case "--injection-tls":
                o.injectionTLS = true
                return .used(1)
            case "--rate":
                guard let v = value.flatMap({ Double($0) }), v > 0, v.isFinite else {
                    return .failure(BenchUsageError("--rate needs messages per second > 0"))
                }
                o.rate = v
            default:
                return .unknown
            }
            return .used(2)
        }
        return error.map { .failure($0) } ?? .success(o)
    }

    /// The relay options of one of the runs.
    func relayOptions(threads: Int, dkim: String?) -> RelayBenchOptions {
        var r = RelayBenchOptions()
        r.scenario = "relay-esp"
        r.duration = duration
        r.connections = connections
        r.threads = threads
        r.dkim = dkim
        r.rate = rate
        r.ip = ip
        r.outputDir = outputDir
        r.writeResults = false // relay-esp writes its own files, with the references in them
        r.ceiling = false
        return r
    }
}

func runRelayESPBench(arguments: [String]) -> Int32 {
    let options: RelayESPOptions
    switch RelayESPOptions.parse(arguments) {
    case .success(let o): options = o
    case .failure(let m):
        fputs("peregrine-bench relay-esp: \(m.message)\n", stderr)
        return 2
    }
    var failed = false
    var table: [[String]] = [["run", "threads", "delivered/s", "CPU µs/msg", "sign µs", "DKIM ratio", "in-daemon sign µs", "sign path ratio", "lost"]]
    for kind in options.backends {
        let clock = RunClock()
        func run(_ label: String, threads: Int, dkim: String?, tls: Bool) -> RelayRun {
            let runner = RelayRunner(options: options.relayOptions(threads: threads, dkim: dkim), target: kind.rawValue, tls: tls)
            runner.injectionTLS = tls && options.injectionTLS
            runner.scenarioName = "relay-esp \(label)"
            let r = runner.run()
            if let e = r.error { fputs("\(kind.rawValue) \(label): \(e)\n", stderr); failed = true }
            if r.lost > 0 { fputs("\(kind.rawValue) \(label): \(r.lost) accepted message(s) never reached the sink\n", stderr); failed = true }
            return r
        }
        let plain = run("plain", threads: 1, dkim: nil, tls: false)
        let tlsOnly = run("tls", threads: 1, dkim: nil, tls: true)
        var esp: [(Int, RelayRun)] = []
        for t in options.threads { esp.append((t, run("dkim-\(options.dkim)", threads: t, dkim: options.dkim, tls: true))) }
        func cpuPerMessage(_ r: RelayRun) -> Double? { (r.figures["mtaCpuSecondsPer10k"] as? Double).map { $0 * 100 } }
        func delivered(_ r: RelayRun) -> Double? { r.figures["deliveredPerSecond"] as? Double }
        let single = esp.first { $0.0 == 1 }?.1 ?? esp.first?.1
        table.append([kind.rawValue + " plain", "1", fmt(delivered(plain)), fmt(cpuPerMessage(plain), 1), "-", "-", "-", "-", "\(plain.lost)"])
        table.append([kind.rawValue + " tls", "1", fmt(delivered(tlsOnly)), fmt(cpuPerMessage(tlsOnly), 1), "-", "-", "-", "-", "\(tlsOnly.lost)"])
        for (threads, r) in esp {
            var doc = r.figures
            let speed = r.figures["opensslSpeed"] as? [String: Any]
            let rsa = speed?["rsa2048SignMicroseconds"] as? Double, ed = speed?["ed25519SignMicroseconds"] as? Double
            let sign: Double? = switch options.dkim {
            case "rsa2048": rsa
            case "ed25519": ed
            default: rsa.flatMap { r in ed.map { r + $0 } }
            }
            let mine = cpuPerMessage(r)
            var ratio: Double?
            if let mine, let sign, sign > 0 {
                if let ref = cpuPerMessage(tlsOnly) { ratio = (mine - ref) / sign; doc["dkimOverheadRatio"] = ratio }
                if let ref = cpuPerMessage(plain) { doc["dkimOverheadRatioOverPlain"] = (mine - ref) / sign }
                doc["signMicroseconds"] = sign
                doc["mtaCpuMicrosecondsPerMessage"] = mine
            }
            // The signing call as the daemon timed it, over the raw sign: what Peregrine's
            // signing path adds (body hash, canonicalisation, field text), without the rest of the relay.
            let inDaemon = (r.figures["daemonSigning"] as? [String: Any])?["microsecondsPerMessage"] as? Double
            var signPath: Double?
            if let inDaemon, let sign, sign > 0 { signPath = inDaemon / sign; doc["signPathRatio"] = signPath }
            if let rate = options.rate { doc["offeredRatePerSecond"] = rate }
            if let one = single.flatMap(delivered), one > 0, let d = delivered(r) { doc["deliveredPerSecondOverThreads1"] = d / one }
            doc["scenario"] = "relay-esp"
            doc["target"] = "\(kind.rawValue)-\(options.dkim)-t\(threads)"
            doc["backend"] = kind.rawValue
            doc["threads"] = threads
            doc["deliveryTLS"] = true
            doc["injectionTLS"] = options.injectionTLS
            doc["lost"] = r.lost
            doc["duplicates"] = r.duplicates
            doc["inRunReferences"] = ["plain": plain.referenceSummary, "tls": tlsOnly.referenceSummary]
            doc["threadRuns"] = Dictionary(uniqueKeysWithValues: esp.map { ("\($0.0)", $0.1.referenceSummary) })
            clock.stamp(&doc)
            // The [[label, value]] rows results/README.md shows (ResultsSummary's generic table).
            doc["summary"] = [["delivered/s", fmt(delivered(r))], ["MTA CPU µs/msg", fmt(mine, 1)],
                              ["TLS-only CPU µs/msg", fmt(cpuPerMessage(tlsOnly), 1)], ["plain CPU µs/msg", fmt(cpuPerMessage(plain), 1)],
                              ["in-run sign µs", fmt(sign, 1)], ["DKIM overhead ratio", fmt(ratio, 2)],
                              ["in-daemon signing µs/msg", fmt(inDaemon, 1)], ["sign path ratio", fmt(signPath, 2)],
                              ["delivered/s ÷ threads 1", fmt(doc["deliveredPerSecondOverThreads1"] as? Double, 2)],
                              ["lost", "\(r.lost)"]]
            table.append([kind.rawValue + " esp " + options.dkim, "\(threads)", fmt(delivered(r)), fmt(mine, 1), fmt(sign, 1),
                          fmt(ratio, 2), fmt(inDaemon, 1), fmt(signPath, 2), "\(r.lost)"])
            guard options.writeResults, r.error == nil else { continue }
            let path = BenchEnvironment.runResultPath(directory: options.outputDir, scenario: "relay-esp",
                                                      target: "\(kind.rawValue)-\(options.dkim)-t\(threads)", startedAt: clock.startedAt)
            if BenchEnvironment.writeJSON(doc, to: path) { fputs("   wrote \(path)\n", stderr) } else { fputs("cannot write \(path)\n", stderr); failed = true }
        }
    }
    print("\nrelay-esp: 4 KB, \(options.connections) injecting connections, \(Int(options.duration)) s per run, durable spool, "
          + "STARTTLS on delivery\(options.injectionTLS ? " and injection" : ""), DKIM \(options.dkim)\(options.rate.map { ", offered \(Int($0)) msg/s" } ?? ""); load average \(BenchEnvironment.loadAverage())")
    var widths = Array(repeating: 0, count: table[0].count)
    for row in table { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
    for row in table {
        print(row.enumerated().map { i, c in i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                                                    : String(repeating: " ", count: widths[i] - c.count) + c }.joined(separator: "  "))
    }
    return failed ? 1 : 0
}

private func fmt(_ v: Double?, _ digits: Int = 0) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "-" }

extension RelayRun {
    /// What a relay-esp file records of another run of the same invocation.
    var referenceSummary: [String: Any] {
        var s: [String: Any] = ["lost": lost]
        for key in ["deliveredPerSecond", "injectedPerSecond", "mtaCpuSecondsPer10k", "accepted", "opensslSpeed"] { s[key] = figures[key] }
        if let threads = (figures["config"] as? [String: Any])?["threads"] { s["threads"] = threads }
        if let e = error { s["error"] = e }
        return s
    }
}
