import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `peregrine-bench crash`: injection at full speed, SIGKILL of the daemon at a
/// seeded random moment (when it has received a random fraction of the
/// count), restart on the same spool, drain to the accept-all sink. Every id
/// the load generator saw accepted (250) must reach the sink: lost must be 0;
/// duplicates (delivered before the kill, not yet marked) are allowed and counted.
func runCrashBench(arguments: [String]) -> Int32 {
    let usage = """
    usage: peregrine-bench crash [--backend epoll|io_uring|dispatch|all] [--rounds N] [--count N] [--seed N]
                                 [--connections N] [--drain-timeout S] [--output-dir DIR] [--no-results]
    """
    let defaults = ["backend": "epoll", "rounds": "3", "count": "20000", "seed": "7", "connections": "16",
                    "drain-timeout": "180", "output-dir": "results"]
    let options: ScenarioOptions
    switch ScenarioOptions.parse(arguments, defaults: defaults, flags: ["no-results"], usage: usage) {
    case .success(let o): options = o
    case .failure(let e): fputs("peregrine-bench crash: \(e.message)\n", stderr); return 2
    }
    var rows: [[String]] = []
    var failed = false
    do {
        let rounds = max(1, try options.int("rounds"))
        let count = max(1, try options.int("count"))
        let drainTimeout = try options.double("drain-timeout")
        var rng = SplitMix64(seed: UInt64(try options.int("seed")))
        for backend in try options.backends() {
            var roundResults: [[String: Any]] = []
            for round in 1...rounds {
                let fraction = 0.1 + 0.8 * rng.nextDouble()
                fputs("== crash on \(backend), round \(round)/\(rounds): SIGKILL after \(Int(fraction * 100))% of \(count) received\n", stderr)
                let r = try CrashRound(backend: backend, count: count, killFraction: fraction,
                                       connections: try options.int("connections"), drainTimeout: drainTimeout).run()
                roundResults.append(r)
                let lost = r["lost"] as? Int ?? -1
                if lost != 0 || (r["error"] as? String) != nil { failed = true }
                rows.append([backend, "\(round)", "\(r["killedAtReceived"] ?? "-")", "\(r["accepted"] ?? "-")",
                             "\(r["deliveredUnique"] ?? "-")", "\(lost)", "\(r["duplicates"] ?? "-")",
                             fmt(r["restartSeconds"] as? Double ?? 0, 2), fmt(r["drainSeconds"] as? Double ?? 0),
                             (r["spoolCheck"] as? String).map { $0.isEmpty ? "-" : String($0.prefix(40)) } ?? "-"])
            }
            if !options.flags.contains("no-results") {
                let rig = try ScenarioRig(scenario: "crash")
                let lost = roundResults.reduce(0) { $0 + ($1["lost"] as? Int ?? 0) }
                let dups = roundResults.reduce(0) { $0 + ($1["duplicates"] as? Int ?? 0) }
                let accepted = roundResults.reduce(0) { $0 + ($1["accepted"] as? Int ?? 0) }
                rig.writeResult(target: backend, figures: [
                    "config": ["mta": "peregrine", "backend": backend, "count": count, "rounds": rounds, "seed": options.string("seed")],
                    "rounds": roundResults, "lost": lost, "duplicates": dups, "accepted": accepted,
                    "summary": [["rounds", "\(rounds)"], ["accepted", "\(accepted)"], ["lost", "\(lost)"], ["dup", "\(dups)"]],
                ], outputDir: options.string("output-dir"))
                rig.cleanUp()
            }
        }
    } catch {
        fputs("peregrine-bench crash: \(error)\n", stderr)
        return 1
    }
    printBenchTable(title: "crash: SIGKILL during full-speed injection, restart on the same spool, drain (lost must be 0)",
                    header: ["backend", "round", "killed at", "accepted", "delivered", "lost", "dup", "restart s", "drain s", "spool-check"],
                    rows: rows)
    return failed ? 1 : 0
}

/// Deterministic PRNG for the kill moments (logged with the seed).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// One kill -9 round; returns its figures (with "error" when a piece failed).
struct CrashRound {
    let backend: String
    let count: Int
    let killFraction: Double
    let connections: Int
    let drainTimeout: Double

    func run() throws -> [String: Any] {
        let rig = try ScenarioRig(scenario: "crash")
        defer { rig.cleanUp() }
        var out: [String: Any] = ["backend": backend, "count": count, "killFraction": killFraction]
        let sinkPort = rig.ports.sink, statsPort = rig.ports.stats, mtaPort = rig.ports.mta, mgmtPort = rig.ports.mgmt
        let sinkIDs = rig.work + "/sink-ids.txt"
        let sink = try rig.startSink(["--accept-all", "--listen", "\(rig.ip):\(sinkPort)", "--record-ids", sinkIDs,
                                      "--stats-port", "\(rig.ip):\(statsPort)", "--backend", "epoll"])
        let spool = rig.work + "/spool"
        let config = """
        smtp-listener \(rig.ip):\(mtaPort)
        http-mgmt-port \(rig.ip):\(mgmtPort)
        spool \(spool)
        host-name mta.peregrine.test
        <source 127.0.0.0/8>
            always-allow-relaying yes
        </source>
        <domain *>
            route [\(rig.ip)]:\(sinkPort)
            max-smtp-out 16
            retry-after 2s
        </domain>

        """
        let configPath = rig.work + "/peregrine.conf"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        var daemon = try rig.startDaemon(configPath: configPath, backend: backend, smtpPort: mtaPort)
        let killAt = max(1, Int(Double(count) * killFraction))
        let loadIDs = rig.work + "/loadgen-ids.txt"
        var killed = false
        var killedAtReceived = 0
        var restartSeconds = 0.0
        var restartError: String?
        let start = Date()
        let summary = try rig.runLoadgen(["--target", "\(rig.ip):\(mtaPort)", "--count", "\(count)", "--connections", "\(connections)",
                                          "--messages-per-connection", "0", "--ids", loadIDs, "--backend", "epoll"],
                                         jsonPath: rig.work + "/loadgen.json", timeout: drainTimeout + 120,
                                         tickMicroseconds: 20_000) { _ in
            guard !killed else { return }
            let received = rig.status(mgmtPort: mgmtPort)?["received"] as? Int ?? 0
            guard received >= killAt else { return }
            kill(daemon.pid, SIGKILL)
            daemon.wait(timeout: 10)
            killed = true
            killedAtReceived = received
            fputs("   SIGKILL at \(String(format: "%.2f", Date().timeIntervalSince(start))) s, daemon had received \(received)\n", stderr)
            let t0 = Date()
            do {
                daemon = try rig.startDaemon(configPath: configPath, backend: backend, smtpPort: mtaPort)
                restartSeconds = Date().timeIntervalSince(t0)
            } catch { restartError = "\(error)" }
        }
        if !killed {
            // The whole count went in before the poll saw the threshold: kill now, mid-delivery.
            killedAtReceived = rig.status(mgmtPort: mgmtPort)?["received"] as? Int ?? 0
            kill(daemon.pid, SIGKILL)
            daemon.wait(timeout: 10)
            fputs("   injection finished first; SIGKILL after injection (daemon had received \(killedAtReceived))\n", stderr)
            let t0 = Date()
            do {
                daemon = try rig.startDaemon(configPath: configPath, backend: backend, smtpPort: mtaPort)
                restartSeconds = Date().timeIntervalSince(t0)
            } catch { restartError = "\(error)" }
        }
        let accepted = ScenarioRig.ids(loadIDs)
        // Drain: until the sink has seen every accepted id (checked by count, then exactly), or no progress for 30 s.
        let drainStart = Date()
        var lastRecorded = -1
        var lastChange = Date()
        while Date().timeIntervalSince(drainStart) < drainTimeout && restartError == nil {
            let recorded = (BenchNet.getJSON(ip: rig.ip, port: statsPort, path: "/stats")?["record_ids"] as? [String: Any])?["recorded"] as? Int ?? 0
            if recorded != lastRecorded { lastRecorded = recorded; lastChange = Date() }
            BenchProgress.every2s("   crash drain: \(Int(Date().timeIntervalSince(drainStart))) s, \(recorded)/\(accepted.count) at the sink")
            let queued = rig.status(mgmtPort: mgmtPort)?["queued"] as? [String: Any]
            let waiting = (queued?["ready"] as? Int ?? 1) + (queued?["delayed"] as? Int ?? 1)
            if recorded >= accepted.count && waiting == 0 { break }
            if Date().timeIntervalSince(lastChange) > 30 { break }
            usleep(200_000)
        }
        BenchProgress.finish()
        let drainSeconds = Date().timeIntervalSince(drainStart)
        let status = rig.status(mgmtPort: mgmtPort) ?? [:]
        daemon.stop()
        sink.stop()
        let check = BenchEnvironment.commandOutput(rig.bin + "/peregrine", ["spool-check", spool])?
            .split(separator: "\n").last.map(String.init) ?? "spool-check failed"
        let seen = ScenarioRig.ids(sinkIDs)
        let rec = ScenarioRig.reconcile(accepted: accepted, seen: seen)
        // Spooled but never acknowledged (the 250 was lost with the process): delivered, which is allowed.
        out["deliveredNotAcknowledged"] = Set(seen).subtracting(accepted).count
        out["killedAtReceived"] = killedAtReceived
        out["killedDuringInjection"] = killed
        out["accepted"] = accepted.count
        out["loadgen"] = summary
        out["deliveredUnique"] = rec.unique
        out["lost"] = rec.lost.count
        out["lostSample"] = Array(rec.lost.prefix(10))
        out["duplicates"] = rec.duplicates
        out["restartSeconds"] = restartSeconds
        out["drainSeconds"] = drainSeconds
        out["daemonStatusAfterRestart"] = status
        out["spoolCheck"] = check
        if let restartError { out["error"] = restartError }
        fputs("   accepted \(accepted.count), delivered \(rec.unique), lost \(rec.lost.count), duplicates \(rec.duplicates); \(check)\n", stderr)
        return out
    }
}
