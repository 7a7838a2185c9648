import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineAccounting

/// The pieces the isp-mix, backlog and crash scenarios share: a scratch
/// directory, child processes that never outlive the run, the daemon's
/// management API, loadgen runs, id reconciliation, accounting counts, and
/// the results file plus the regenerated results/README.md.
final class ScenarioRig {
    let scenario: String
    let bin = BenchEnvironment.binDirectory()
    /// The bench process's own loopback address (BenchNet.runAddress).
    let ip = BenchNet.runAddress
    let work: String
    /// Start time and load average at the start, for the results file.
    let clock = RunClock()
    private(set) var processes: [BenchProcess] = []

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(scenario: String) throws {
        self.scenario = scenario
        var chars = Array((NSTemporaryDirectory() + "peregrine-\(scenario)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&chars) else { throw Failure(description: "mkdtemp failed") }
        work = String(cString: made)
    }

    /// Stops what is still running; removes the scratch directory unless PEREGRINE_BENCH_KEEP is set.
    func cleanUp() {
        for p in processes.reversed() { p.stop(grace: 5) }
        if getenv("PEREGRINE_BENCH_KEEP") == nil { try? FileManager.default.removeItem(atPath: work) }
        else { fputs("   kept \(work)\n", stderr) }
    }

    /// This rig's ports on `ip`, free by construction (see BenchNet.runAddress).
    let ports = BenchNet.ports()

    func start(_ name: String, _ executable: String, _ arguments: [String]) throws -> BenchProcess {
        let p = BenchProcess(name: name, executable: bin + "/" + executable, arguments: arguments,
                             logPath: work + "/\(name)-\(processes.count).log")
        try p.start()
        processes.append(p)
        return p
    }

    /// Starts the sink and waits for its "ready" line.
    func startSink(_ arguments: [String]) throws -> BenchProcess {
        let sink = try start("sink", "peregrine-sink", arguments)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let log = try? String(contentsOfFile: sink.logPath, encoding: .utf8), log.contains("peregrine-sink: ready") { return sink }
            if !sink.isRunning { break }
            usleep(50_000)
        }
        throw Failure(description: "sink did not start: \(sink.logTail)")
    }

    /// Starts `peregrine run` and waits for its SMTP listener.
    func startDaemon(configPath: String, backend: String, smtpPort: UInt16) throws -> BenchProcess {
        let p = try start("peregrine", "peregrine", ["run", "--config", configPath, "--backend", backend])
        guard BenchNet.waitForListener(ip: ip, port: smtpPort, timeout: 60) else {
            throw Failure(description: "peregrine did not start: \(p.logTail)")
        }
        return p
    }

    /// The daemon's `GET /status`.
    func status(mgmtPort: UInt16) -> [String: Any]? { BenchNet.getJSON(ip: ip, port: mgmtPort, path: "/status") }

    /// `peregrine ctl --config FILE --host IP --port P ARGS…` (the config names the
    /// management token, which every call but a read needs); returns its output.
    @discardableResult
    func ctl(mgmtPort: UInt16, configPath: String, _ arguments: [String]) -> String? {
        BenchEnvironment.commandOutput(bin + "/peregrine", ["ctl", "--config", configPath, "--host", ip, "--port", "\(mgmtPort)"]
                                       + arguments)
    }

    /// Runs the load generator to completion (or `timeout`), calling `tick` every 200 ms; returns its JSON summary.
    func runLoadgen(_ arguments: [String], jsonPath: String, timeout: Double, tickMicroseconds: UInt32 = 200_000,
                    tick: (BenchProcess) -> Void = { _ in }) throws -> [String: Any] {
        let loadgen = try start("loadgen", "peregrine-loadgen", arguments + ["--json", jsonPath, "--no-progress"])
        let deadline = Date().addingTimeInterval(timeout)
        while loadgen.isRunning {
            usleep(tickMicroseconds)
            tick(loadgen)
            if Date() > deadline { loadgen.stop(); break }
        }
        guard let data = FileManager.default.contents(atPath: jsonPath),
              let summary = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure(description: "loadgen produced no summary: \(loadgen.logTail)")
        }
        return summary
    }

    /// Ids from a loadgen `--ids` or sink `--record-ids` file ("ID [NS]" lines).
    static func ids(_ path: String) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// lost = in `accepted` but never in `seen`; duplicates = copies in `seen` beyond the times the id was accepted.
    static func reconcile(accepted: [String], seen: [String]) -> (lost: [String], duplicates: Int, unique: Int) {
        var count: [String: Int] = [:]
        count.reserveCapacity(seen.count)
        for id in seen { count[id, default: 0] += 1 }
        var acceptedCount: [String: Int] = [:]
        acceptedCount.reserveCapacity(accepted.count)
        for id in accepted { acceptedCount[id, default: 0] += 1 }
        let lost = acceptedCount.keys.filter { count[$0] == nil }
        let duplicates = count.reduce(0) { $0 + max(0, $1.value - max(1, acceptedCount[$1.key] ?? 0)) }
        return (lost.sorted(), duplicates, count.count)
    }

    /// Accounting file counts: records by type, bounces by category, and the bounced recipients.
    struct Accounting {
        var byType: [String: Int] = [:]
        var bouncesByCategory: [String: Int] = [:]
        var transientByStatus: [String: Int] = [:]
        var bouncedRecipients: Set<String> = []
        /// `b` records per recipient address (one address may bounce more than once).
        var bouncesPerRecipient: [String: Int] = [:]
        /// `b` records by `dsnStatus` (5.7.26, 5.1.1, …), and the first diagnostic seen for each status.
        var bouncesByStatus: [String: Int] = [:]
        var bounceDiagnosticSample: [String] = []
        var deliveredRecipients: [String: Int] = [:]
        /// `d` records by recipient domain (lower-cased), then by `dlvTlsProtocol` ("" = plain text).
        var deliveryProtocols: [String: [String: Int]] = [:]
    }

    /// The accounting counts; a file that cannot be read or parsed fails the run
    /// (empty counts would make "nothing missing" checks pass).
    static func accounting(_ path: String) throws -> Accounting {
        var a = Accounting()
        let rows: [AccountingCSVRow]
        do { rows = try AccountingCSVReader.read(path: path) } catch {
            throw Failure(description: "cannot read the accounting file \(path): \(error)")
        }
        for row in rows {
            let type = row["type"] ?? "?"
            a.byType[type, default: 0] += 1
            switch type {
            case "b":
                a.bouncesByCategory[row["bounceCat"] ?? "", default: 0] += 1
                a.bouncedRecipients.insert(row["rcpt"] ?? "")
                a.bouncesPerRecipient[row["rcpt"] ?? "", default: 0] += 1
                let status = (row["dsnStatus"] ?? "").split(separator: " ").first.map(String.init) ?? ""
                a.bouncesByStatus[status.isEmpty ? "-" : status, default: 0] += 1
                // One diagnostic per status, so a result file shows the receivers' real texts.
                if a.bounceDiagnosticSample.count < 8, let diag = row["dsnDiag"],
                   !a.bounceDiagnosticSample.contains(where: { $0.hasPrefix(status + " ") }) {
                    a.bounceDiagnosticSample.append(status + " " + diag)
                }
            case "d":
                let rcpt = row["rcpt"] ?? ""
                a.deliveredRecipients[rcpt, default: 0] += 1
                let domain = rcpt.split(separator: "@").last.map { $0.lowercased() } ?? ""
                a.deliveryProtocols[domain, default: [:]][row["dlvTlsProtocol"] ?? "", default: 0] += 1
            case "t", "tq":
                let status = (row["dsnStatus"] ?? "").split(separator: " ").first.map(String.init) ?? ""
                a.transientByStatus[status.isEmpty ? "-" : status, default: 0] += 1
            default: break
            }
        }
        return a
    }

    /// Writes results/<scenario>-<target>-<start time>.json (a new file per run) and regenerates results/README.md.
    func writeResult(target: String, figures: [String: Any], outputDir: String) {
        var doc = figures
        doc["scenario"] = scenario
        doc["target"] = target
        doc["timestamp"] = Int(Date().timeIntervalSince1970)
        clock.stamp(&doc)
        let path = BenchEnvironment.runResultPath(directory: outputDir, scenario: scenario, target: target,
                                                  startedAt: clock.startedAt)
        if BenchEnvironment.writeJSON(doc, to: path) {
            fputs("   wrote \(path)\n", stderr)
            _ = writeResultsSummary(directory: outputDir)
        } else {
            fputs("cannot write \(path)\n", stderr)
        }
    }
}

/// `--name value` options with defaults, for the scenarios in this folder.
struct ScenarioOptions {
    var values: [String: String]
    var flags: Set<String> = []

    static func parse(_ args: [String], defaults: [String: String], flags known: Set<String> = [],
                      usage: String) -> Result<ScenarioOptions, BenchUsageError> {
        var o = ScenarioOptions(values: defaults)
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-h" || a == "--help" { print(usage); exit(0) }
            guard a.hasPrefix("--") else { return .failure(BenchUsageError("unexpected '\(a)'\n\(usage)")) }
            let key = String(a.dropFirst(2))
            if known.contains(key) { o.flags.insert(key); i += 1; continue }
            guard defaults[key] != nil else { return .failure(BenchUsageError("unknown option '\(a)'\n\(usage)")) }
            guard i + 1 < args.count else { return .failure(BenchUsageError("\(a) needs a value")) }
            o.values[key] = args[i + 1]
            i += 2
        }
        return .success(o)
    }

    func string(_ k: String) -> String { values[k] ?? "" }

    func int(_ k: String) throws -> Int {
        guard let v = Int(string(k)), v >= 0 else { throw BenchUsageError("--\(k) needs a whole number, not '\(string(k))'") }
        return v
    }

    func double(_ k: String) throws -> Double {
        guard let v = Double(string(k)), v >= 0 else { throw BenchUsageError("--\(k) needs a number, not '\(string(k))'") }
        return v
    }

    /// `--backend all|io_uring|epoll|dispatch`.
    func backends() throws -> [String] {
        let v = string("backend")
        if v == "all" { return BackendKindNames.all }
        guard BackendKindNames.all.contains(v) else { throw BenchUsageError("--backend takes all, \(BackendKindNames.all.joined(separator: ", "))") }
        return [v]
    }
}

enum BackendKindNames {
    static let all = ["io_uring", "epoll", "dispatch"]
}

/// One left-aligned first column, the rest right-aligned.
func printBenchTable(title: String, header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    print("\n" + title)
    for row in [header] + rows {
        print(row.enumerated().map { i, c in
            i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: max(0, widths[i] - c.count)) + c
        }.joined(separator: "  "))
    }
}

func fmt(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }

/// Returns the process's RSS in bytes (0 when it is gone).
func rssBytes(_ pid: Int32) -> Int { ProcessUsage.read(pid: pid)?.rssBytes ?? 0 }
