import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// `peregrine-bench relay`: loadgen → MTA → accept-all sink on one machine,
/// with a durable spool, for each backend and (with --peer postfix) for
/// Postfix in the MTA's place, side by side in one run.
///
/// Reconciliation: every id the MTA accepted (loadgen's list) must show up at
/// the sink (the sink's list); lost = accepted but never delivered,
/// duplicates = delivered more than once.
struct RelayBenchOptions: RelayScenarioOptions {
    var scenario = "relay"
    var backends: [BackendKind] = BackendKind.allCases
    var peers: [String] = []
    /// The harness pair ceiling: loadgen → sink directly, measured in the same invocation
    /// (`--no-ceiling` leaves it out), so every MTA figure can be read against it.
    var ceiling = true
    var duration = 60.0
    /// `--count N`: the loadgen stops after N messages (`--duration` still bounds it), so
    /// runs compared side by side (old build vs new) do the same work.
    var count: Int?
    var messageSize = 4096
    var connections = 32
    var threads = 1
    var drainTimeout = 120.0
    var outputDir = "results"
    var writeResults = true
    /// `--starttls`: TLS on both hops (loadgen→MTA, MTA→sink); `--starttls-and-plain`: each target plain, then TLS.
    var tlsModes: [Bool] = [false]
    /// The loopback address every process of the run binds (`--ip`): by default
    /// the bench process's own (BenchNet.runAddress), so the fixed ports on it
    /// are nobody else's.
    var ip = BenchNet.runAddress
    /// `--dkim rsa2048|ed25519|dual`: Peregrine signs every message at injection
    /// (a key made for the run; `dkim-also-sign-as` so every From is signed).
    var dkim: String?
    /// Open-loop injection rate (messages/s) given to the loadgen; nil: as fast as accepted.
    /// relay-esp's `--rate`: its runs then compare CPU per message at the same rate.
    var rate: Double?

    static let usage = """
    usage: peregrine-bench relay|relay-100k [--backend all|io_uring|epoll|dispatch] [--peer postfix]
                                 [--duration S] [--count N] [--connections N] [--threads N] [--size BYTES]
                                 [--drain-timeout S] [--output-dir DIR] [--no-results]
                                 [--starttls | --starttls-and-plain] [--ip 127.X.Y.Z] [--no-ceiling]
                                 [--dkim rsa2048|ed25519|dual]
    The harness ceiling (loadgen → sink directly) and the peers run first; each backend's
    results file records their figures from this invocation (inRunPeers).
    """

    static func parse(_ args: [String], scenario: String) -> Result<RelayBenchOptions, BenchUsageError> {
        var o = RelayBenchOptions()
        o.scenario = scenario
        if scenario == "relay-100k" { o.messageSize = 100 * 1024 }
        let error = RelayOptionParser.parse(args, into: &o) { o, option, value in
            switch option {
            case "--peer":
                guard let v = value, v == "postfix" else { return .failure(BenchUsageError("--peer takes postfix")) }
                o.peers = ["postfix"]
            case "--count":
                guard let v = value, let n = Int(v), n > 0 else { return .failure(BenchUsageError("--count needs a number of messages > 0")) }
                o.count = n
            case "--threads": return RelayOptionParser.positive(&o, \.threads, value, { Int($0) }, "--threads needs a number")
            case "--size": return RelayOptionParser.positive(&o, \.messageSize, value, { Int($0) }, "--size needs bytes")
            case "--drain-timeout":
                return RelayOptionParser.positive(&o, \.drainTimeout, value, { Double($0) }, "--drain-timeout needs seconds")
            case "--dkim":
                switch RelayOptionParser.dkim(value) {
                case .success(let v): o.dkim = v
                case .failure(let e): return .failure(e)
                }
            case "--no-ceiling":
                o.ceiling = false
                return .used(1)
            case "--starttls":
                o.tlsModes = [true]
                return .used(1)
            case "--starttls-and-plain":
                o.tlsModes = [false, true]
                return .used(1)
            default:
                return .unknown
            }
            return .used(2)
        }
        return error.map { .failure($0) } ?? .success(o)
    }
}

struct BenchUsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// One run's figures.
struct RelayRun {
    var target: String
    var figures: [String: Any] = [:]
    var error: String?
    var lost = 0
    var duplicates = 0
    /// Its results file, when one was written.
    var file: String?

    /// What a backend's file records of a peer measured in the same invocation.
    var peerSummary: [String: Any] {
        var s: [String: Any] = [:]
        for key in ["deliveredPerSecond", "injectedPerSecond", "mtaCpuSecondsPer10k", "accepted"] { s[key] = figures[key] }
        if let lat = figures["injectToDeliverMs"] { s["injectToDeliverMs"] = lat }
        if let file { s["file"] = (file as NSString).lastPathComponent }
        return s
    }
}

func runRelayBench(arguments: [String], scenario: String) -> Int32 {
    let options: RelayBenchOptions
    switch RelayBenchOptions.parse(arguments, scenario: scenario) {
    case .success(let o): options = o
    case .failure(let m):
        fputs("peregrine-bench \(scenario): \(m.message)\n", stderr)
        return 2
    }
    var runs: [RelayRun] = []
    // The reference points first, so each backend's file can carry them: the same
    // machine, the same minutes, the same load (issue 17: a drop that was only load
    // shows in the absolute figure but not in the ratio to an in-run peer).
    var peers: [String: [String: Any]] = [:]
    var references = options.ceiling ? ["harness"] : []
    references += options.peers
    for reference in references {
        let run = RelayRunner(options: options, target: reference).run()
        runs.append(run)
        if run.error == nil && run.lost == 0 { peers[reference] = run.peerSummary }
    }
    for kind in options.backends {
        // --starttls-and-plain: the plain run is the baseline inside the TLS run's JSON.
        var baseline: RelayRun?
        for tls in options.tlsModes {
            let runner = RelayRunner(options: options, target: kind.rawValue, tls: tls)
            runner.baseline = baseline
            // TLS runs have no TLS peer measured: their peers would mislead, so only plain runs carry them.
            if !tls { runner.inRunPeers = peers }
            let run = runner.run()
            if !tls && options.tlsModes.count > 1 { baseline = run }
            runs.append(run)
        }
    }
    printRelayTable(runs, options: options)
    var failed = false
    for r in runs {
        if let e = r.error { fputs("\(r.target): \(e)\n", stderr); failed = true }
        if r.lost > 0 { fputs("\(r.target): \(r.lost) accepted message(s) never reached the sink\n", stderr); failed = true }
    }
    return failed ? 1 : 0
}

private func printRelayTable(_ runs: [RelayRun], options: RelayBenchOptions) {
    let header = ["target", "injected/s", "delivered/s", "CPU s/10k", "peak RSS MB", "p50 ms", "p99 ms", "lost", "dup", "sink CPU%", "loadgen CPU%"]
    var rows = [header]
    for r in runs {
        let f = r.figures
        func num(_ k: String, _ digits: Int = 0) -> String {
            guard let v = f[k] as? Double else { return r.error == nil ? "-" : "error" }
            return String(format: "%.\(digits)f", v)
        }
        let lat = f["injectToDeliverMs"] as? [String: Double]
        rows.append([r.target, num("injectedPerSecond"), num("deliveredPerSecond"), num("mtaCpuSecondsPer10k", 2),
                     num("mtaPeakRSSMB", 1), lat.map { String(format: "%.1f", $0["p50"] ?? 0) } ?? "-",
                     lat.map { String(format: "%.1f", $0["p99"] ?? 0) } ?? "-", "\(r.lost)", "\(r.duplicates)",
                     num("sinkCpuPercent", 0), num("loadgenCpuPercent", 0)])
    }
    var widths = Array(repeating: 0, count: header.count)
    for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
    print("\n\(options.scenario): \(options.messageSize) byte messages, \(options.connections) injecting connections, "
          + "\(Int(options.duration)) s, durable spool")
    for row in rows {
        print(row.enumerated().map { i, c in i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                                                    : String(repeating: " ", count: widths[i] - c.count) + c }
                .joined(separator: "  "))
    }
}

/// Runs one target: starts the sink and the MTA (Peregrine on a backend, or Postfix),
/// injects for the duration, waits for the drain, reconciles, writes the JSON.
final class RelayRunner {
    let options: RelayBenchOptions
    let target: String
    let bin = BenchEnvironment.binDirectory()
    var ip: String { options.ip }
    /// This run's ports on `ip`: free by construction (BenchNet.runAddress).
    let ports = BenchNet.ports()
    var work = ""
    var processes: [BenchProcess] = []
    var postfixDir: String?
    private var postfixCleanUp: Int?
    /// STARTTLS on both hops (RelayBench+TLS.swift).
    let tls: Bool
    var scenario: String {
        scenarioName ?? (tls ? options.scenario + "-tls" : options.scenario) + (options.dkim.map { "-dkim-" + $0 } ?? "")
    }
    /// A scenario that runs the relay as one of its steps names it (relay-esp).
    var scenarioName: String?
    /// STARTTLS on the loadgen → MTA hop; nil: as `tls` (relay-esp may want delivery TLS only).
    var injectionTLS: Bool?
    /// The plain run of the same invocation (TLS runs of --starttls-and-plain).
    var baseline: RelayRun?
    /// The harness ceiling and Postfix figures of this invocation, by target.
    var inRunPeers: [String: [String: Any]] = [:]
    let clock = RunClock()
    var writesResults: Bool { options.writeResults && (tls || options.tlsModes.count == 1) }

    init(options: RelayBenchOptions, target: String, tls: Bool = false) {
        self.options = options
        self.target = target
        self.tls = tls && target != "postfix"
    }

    func run() -> RelayRun {
        var result = RelayRun(target: tls ? target + "+tls" : target)
        let template = NSTemporaryDirectory() + "peregrine-bench-XXXXXX"
        var chars = Array(template.utf8CString)
        guard let made = mkdtemp(&chars) else { result.error = "mkdtemp failed"; return result }
        work = String(cString: made)
        // A failed or lossy run keeps its directory (logs of the MTA, sink, loadgen) for a post-mortem.
        defer { cleanUp(keep: result.error != nil || result.lost > 0) }
        fputs("== \(scenario) on \(target): \(Int(options.duration)) s\n", stderr)
        do {
            result.figures = try measure(&result)
        } catch {
            result.error = "\(error)"
        }
        if writesResults && result.error == nil {
            let path = BenchEnvironment.runResultPath(directory: options.outputDir, scenario: scenario, target: target,
                                                      startedAt: clock.startedAt)
            var doc = result.figures
            doc["scenario"] = scenario
            doc["target"] = target
            clock.stamp(&doc)
            doc["lost"] = result.lost
            doc["duplicates"] = result.duplicates
            if let baseline { doc["plainSameInvocation"] = tlsComparison(baseline, result) }
            if !inRunPeers.isEmpty {
                doc["inRunPeers"] = inRunPeers
                // Peregrine ÷ peer on delivered/s: the load-robust figures the dashboard charts.
                var ratios: [String: Double] = [:]
                let mine = result.figures["deliveredPerSecond"] as? Double ?? 0
                for (peer, figures) in inRunPeers {
                    if let theirs = figures["deliveredPerSecond"] as? Double, theirs > 0 { ratios[peer] = mine / theirs }
                }
                doc["deliveredPerSecondOverPeer"] = ratios
            }
            if !BenchEnvironment.writeJSON(doc, to: path) { fputs("cannot write \(path)\n", stderr) }
            else { fputs("   wrote \(path)\n", stderr); result.file = path }
        }
        return result
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    private func measure(_ result: inout RelayRun) throws -> [String: Any] {
        let sinkPort = ports.sink, statsPort = ports.stats, mgmtPort = ports.mgmt
        // The harness ceiling has no MTA: the loadgen talks to the sink itself.
        let mtaPort = target == "harness" ? sinkPort : ports.mta
        // The sink: accept-all, recording every id it accepts.
        let sinkIDs = work + "/sink-ids.txt"
        let sink = BenchProcess(name: "sink", executable: bin + "/peregrine-sink",
                                arguments: ["--accept-all", "--listen", "\(ip):\(sinkPort)", "--record-ids", sinkIDs,
                                            "--stats-port", "\(ip):\(statsPort)", "--backend", "epoll", "--quiet"]
                                    + (try tlsSinkArguments()),
                                logPath: work + "/sink.log")
        try sink.start(); processes.append(sink)
        guard BenchNet.waitForListener(ip: ip, port: sinkPort, timeout: 20) else {
            throw Failure(description: "sink did not start: \(sink.logTail)")
        }
        // The MTA under test.
        var config: [String: Any] = [:]
        let mtaPid: Int32
        var mta: BenchProcess?
        if target == "harness" {
            mtaPid = sink.pid
            config = ["mta": "none: loadgen → sink directly (the harness pair ceiling; mtaCpu figures are the sink's)"]
        } else if target == "postfix" {
            let dir = work + "/postfix"
            postfixDir = dir
            // Postfix's master daemonizes: no death signal reaches it, so a terminated bench stops it by script.
            let script = postfixScript()
            postfixCleanUp = BenchChildren.addCleanUp { _ = BenchEnvironment.commandOutput("/bin/bash", [script, "stop", dir]) }
            // mkdtemp makes the work directory 0700: Postfix's daemons run as the
            // postfix user and must reach data/ and queue/ below it.
            chmod(work, 0o755)
            let setup = BenchProcess(name: "postfix-setup", executable: "/bin/bash",
                                     arguments: [postfixScript(), "start", dir, "\(ip):\(mtaPort)", "\(ip):\(sinkPort)"],
                                     logPath: work + "/postfix-setup.log")
            try setup.start()
            setup.wait(timeout: 60)
            guard BenchNet.waitForListener(ip: ip, port: mtaPort, timeout: 30),
                  let pidText = try? String(contentsOfFile: dir + "/queue/pid/master.pid", encoding: .utf8),
                  let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw Failure(description: "postfix did not start: \(setup.logTail)")
            }
            mtaPid = pid
            config = ["mta": "postfix", "version": BenchEnvironment.commandOutput("/usr/sbin/postconf", ["-h", "mail_version"])?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?", "queue": "durable (Postfix default)"]
        } else {
            let spool = work + "/spool"
            var dkimLines = ""
            if let dkim = options.dkim {
                for kind in dkim == "dual" ? ["rsa2048", "ed25519"] : [dkim] {
                    guard let key = makeBenchDKIMKey(kind, in: work) else { throw Failure(description: "openssl could not make a \(kind) key") }
                    dkimLines += "    domain-key \(kind == "rsa2048" ? "rsa" : "ed"),bench.test,\(key)\n"
                }
                dkimLines += "    dkim-sign yes\n    dkim-also-sign-as bench.test\n"
            }
            let confText = """
            smtp-listener \(ip):\(mtaPort)
            http-mgmt-port \(ip):\(mgmtPort)
            spool \(spool)
            host-name mta.peregrine.test
            threads \(options.threads)
            <source 127.0.0.0/8>
                always-allow-relaying yes
                process-x-virtual-mta yes
                process-x-job yes
            \(dkimLines)</source>
            <acct-file \(work)/acct.csv>
                records d,b
            </acct-file>
            <domain *>
                route [\(ip)]:\(sinkPort)
                max-smtp-out 32
                max-msg-per-connection 0
            \(tlsDomainLines)</domain>
            \(tlsGlobalLines)
            """
            let confPath = work + "/peregrine.conf"
            try confText.write(toFile: confPath, atomically: true, encoding: .utf8)
            let p = BenchProcess(name: "peregrine", executable: bin + "/peregrine",
                                 arguments: ["run", "--config", confPath, "--backend", target], logPath: work + "/peregrine.log")
            try p.start(); processes.append(p)
            mta = p
            guard BenchNet.waitForListener(ip: ip, port: mtaPort, timeout: 30) else {
                throw Failure(description: "peregrine did not start: \(p.logTail)")
            }
            mtaPid = p.pid
            config = ["mta": "peregrine", "backend": target, "threads": options.threads, "config": confText]
        }
        // Baselines, then the load.
        func mtaUsage() -> ProcessUsage {
            var total = ProcessUsage.read(pid: mtaPid) ?? ProcessUsage(cpuSeconds: 0, rssBytes: 0, peakRSSBytes: 0)
            if target == "postfix" {
                for c in ProcessUsage.descendants(of: mtaPid) {
                    if let u = ProcessUsage.read(pid: c) { total.cpuSeconds += u.cpuSeconds; total.rssBytes += u.rssBytes }
                }
                total.peakRSSBytes = max(total.peakRSSBytes, total.rssBytes)
            }
            return total
        }
        let mta0 = mtaUsage()
        let sink0 = ProcessUsage.read(pid: sink.pid)?.cpuSeconds ?? 0
        let loadIDs = work + "/loadgen-ids.txt"
        let loadJSON = work + "/loadgen.json"
        let loadgen = BenchProcess(name: "loadgen", executable: bin + "/peregrine-loadgen",
                                   arguments: ["--target", "\(ip):\(mtaPort)", "--duration", "\(options.duration)",
                                               "--connections", "\(options.connections)", "--messages-per-connection", "0",
                                               "--size", "\(options.messageSize)", "--ids", loadIDs, "--json", loadJSON,
                                               "--no-progress", "--backend", "epoll"] + ((injectionTLS ?? tls) ? ["--starttls"] : [])
                                              + (options.count.map { ["--count", "\($0)"] } ?? [])
                                              + (options.rate.map { ["--rate", "\($0)/s"] } ?? []),
                                   logPath: work + "/loadgen.log")
        let start = Date()
        try loadgen.start(); processes.append(loadgen)
        var peakRSS = 0
        var loadgenCPU = 0.0
        var lastProgress = start
        while loadgen.isRunning {
            usleep(200_000)
            if let u = ProcessUsage.read(pid: loadgen.pid) { loadgenCPU = u.cpuSeconds }
            peakRSS = max(peakRSS, mtaUsage().rssBytes)
            if BenchProgress.enabled && Date().timeIntervalSince(lastProgress) >= 1 {
                lastProgress = Date()
                let elapsed = lastProgress.timeIntervalSince(start)
                let stats = BenchNet.getJSON(ip: ip, port: statsPort, path: "/stats")
                let atSink = (stats?["record_ids"] as? [String: Any])?["recorded"] as? Int ?? 0
                BenchProgress.update("   \(scenario) \(target): \(Int(elapsed))/\(Int(options.duration)) s, \(atSink) delivered, "
                                     + "\(Int(Double(atSink) / max(elapsed, 0.001))) delivered/s so far")
            }
            if Date().timeIntervalSince(start) > options.duration + 120 { loadgen.stop(); break }
        }
        BenchProgress.finish()
        let injectEnd = Date()
        guard let data = FileManager.default.contents(atPath: loadJSON),
              let summary = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let accepted = summary["accepted"] as? Int else {
            throw Failure(description: "loadgen produced no summary: \(loadgen.logTail)")
        }
        // Drain: wait until the sink has everything the MTA accepted.
        var delivered = 0
        var lastChange = Date()
        var lastDelivery = injectEnd
        let drainDeadline = Date().addingTimeInterval(options.drainTimeout)
        while Date() < drainDeadline {
            let stats = BenchNet.getJSON(ip: ip, port: statsPort, path: "/stats")
            let now = (stats?["record_ids"] as? [String: Any])?["recorded"] as? Int ?? delivered
            if now != delivered { delivered = now; lastChange = Date(); lastDelivery = Date() }
            peakRSS = max(peakRSS, mtaUsage().rssBytes)
            if delivered >= accepted { break }
            if Date().timeIntervalSince(lastChange) > 30 { break }
            // A daemon that died delivers nothing more: say so now rather than after 30 s.
            if let mta, !mta.isRunning { break }
            usleep(100_000)
        }
        // Captured before the stop below: an MTA that exited by itself is a failed run,
        // reported with how it ended (its log has the crash report, if any).
        let mtaExit = mta?.exitDescription
        let mta1 = mtaUsage()
        let signing = options.dkim != nil && target != "postfix" ? DaemonSigningTime.read(ip: ip, port: mgmtPort) : nil
        let sink1 = ProcessUsage.read(pid: sink.pid)?.cpuSeconds ?? sink0
        peakRSS = max(peakRSS, mta1.peakRSSBytes, mta1.rssBytes)
        let tlsStats = tls ? tlsFigures(statsPort: statsPort) : nil
        // Stop everything; the sink writes its id list on exit.
        if let mta { mta.stop() }
        if let dir = postfixDir { _ = BenchEnvironment.commandOutput("/bin/bash", [postfixScript(), "stop", dir]) }
        sink.stop()
        let sent = Self.readIDs(loadIDs)
        let seen = Self.readIDs(sinkIDs)
        var seenCount: [String: Int] = [:]
        for (id, _) in seen { seenCount[id, default: 0] += 1 }
        result.lost = sent.reduce(0) { $0 + (seenCount[$1.0] == nil ? 1 : 0) }
        result.duplicates = seenCount.values.reduce(0) { $0 + max(0, $1 - 1) }
        // Inject→deliver latency from the loadgen's send time and the sink's arrival time.
        var sentAt: [String: Int64] = [:]
        for (id, t) in sent { if let t { sentAt[id] = t } }
        var latencies: [Double] = []
        for (id, t) in seen { if let t, let s = sentAt[id] { latencies.append(Double(t - s) / 1e6) } }
        latencies.sort()
        func pct(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p / 100))]
        }
        let injectSeconds = summary["elapsedSeconds"] as? Double ?? injectEnd.timeIntervalSince(start)
        let endToEnd = max(lastDelivery.timeIntervalSince(start), 0.001)
        let mtaCPU = mta1.cpuSeconds - mta0.cpuSeconds
        let wall = max(lastDelivery.timeIntervalSince(start), 0.001)
        var figures: [String: Any] = [
            "config": config,
            "durationSeconds": options.duration,
            "count": options.count ?? NSNull(),
            "messageSize": options.messageSize,
            "connections": options.connections,
            "accepted": accepted,
            "deliveredAtSink": delivered,
            "injectedPerSecond": Double(accepted) / max(injectSeconds, 0.001),
            "deliveredPerSecond": Double(delivered) / endToEnd,
            "endToEndSeconds": endToEnd,
            "mtaCpuSeconds": mtaCPU,
            "mtaCpuSecondsPer10k": delivered > 0 ? mtaCPU / Double(delivered) * 10_000 : 0,
            "mtaPeakRSSMB": Double(peakRSS) / 1_048_576,
            "sinkCpuPercent": (sink1 - sink0) / wall * 100,
            "loadgenCpuPercent": loadgenCPU / max(injectSeconds, 0.001) * 100,
            "loadgen": summary,
        ]
        if let tlsStats { figures["starttls"] = tlsStats }
        if options.dkim != nil, target != "postfix" {
            figures["dkim"] = options.dkim
            // The reference measured in this run (after the load: the same machine state).
            if let speed = OpenSSLSpeed.measure() { figures["opensslSpeed"] = speed.json }
            if let signing { figures["daemonSigning"] = signing.json }
        }
        if !latencies.isEmpty {
            figures["injectToDeliverMs"] = ["p50": pct(50), "p90": pct(90), "p99": pct(99), "max": latencies.last ?? 0]
        }
        if delivered < accepted && result.lost == 0 { result.lost = accepted - delivered }
        if let mtaExit, let mta {
            result.error = "peregrine exited during the run (\(mtaExit)); \(mta.logPath): \(mta.logTail)"
            figures["mtaExited"] = mtaExit
        }
        if result.lost > 0 && target != "postfix" && target != "harness" {
            // Undelivered is not lost if the spool kept it: count what it still holds (the MTA has stopped).
            let report = BenchEnvironment.commandOutput(bin + "/peregrine", ["spool-check", work + "/spool"])
            let prefix = "live messages: "
            let live = report?.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) }
            figures["spoolLiveMessagesAfterRun"] = live ?? -1
            fputs("   spool after the run: \(live.map { "\($0) live message(s)" } ?? "spool-check failed")\n", stderr)
        }
        return figures
    }

    /// Reads "ID [unix-nanoseconds]" lines.
    static func readIDs(_ path: String) -> [(String, Int64?)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            return (String(parts[0]), parts.count > 1 ? Int64(parts[1]) : nil)
        }
    }

    private func postfixScript() -> String {
        // scripts/ sits at the package root; the bench runs from there (scripts/bench) or finds it upwards.
        var dir = FileManager.default.currentDirectoryPath
        for _ in 0..<6 {
            let candidate = dir + "/scripts/postfix-instance"
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return "scripts/postfix-instance"
    }

    private func cleanUp(keep: Bool) {
        for p in processes.reversed() { p.stop(grace: 5) }
        if let dir = postfixDir { _ = BenchEnvironment.commandOutput("/bin/bash", [postfixScript(), "stop", dir]) }
        if let postfixCleanUp { BenchChildren.removeCleanUp(postfixCleanUp) }
        if keep && !work.isEmpty { fputs("   kept \(work) (logs of this run)\n", stderr) }
        if !work.isEmpty && !keep && getenv("PEREGRINE_BENCH_KEEP") == nil { try? FileManager.default.removeItem(atPath: work) }
    }
}
