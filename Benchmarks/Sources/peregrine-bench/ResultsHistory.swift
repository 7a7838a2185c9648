import Foundation

/// Every run the results directory holds, as the dashboard and `compare` read it:
/// the timestamped run files (results/*.json with a startedAt) and the runs
/// imported from git history (results/history/*.json). The date-only files that
/// predate issue 17 are skipped: each of them is also in history/.
struct BenchRun {
    /// Path relative to the results directory (what the dashboard links to).
    var file: String
    var scenario: String
    var target: String
    var startedAt: String
    var commit: String
    var doc: [String: Any]

    static func load(directory: String) -> [BenchRun] {
        var runs: [BenchRun] = []
        for sub in ["", "history/"] {
            let dir = directory + "/" + sub
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }
            for name in names.sorted() {
                if let run = BenchRun(path: dir + name, file: sub + name) { runs.append(run) }
            }
        }
        return runs.sorted { ($0.startedAt, $0.file) < ($1.startedAt, $1.file) }
    }

    init?(path: String, file: String) {
        guard let data = FileManager.default.contents(atPath: path),
              let doc = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let started = doc["startedAt"] as? String else { return nil }
        self.file = file
        self.doc = doc
        startedAt = started
        let stem = String((file as NSString).lastPathComponent.dropLast(5))
        scenario = (doc["scenario"] as? String) ?? (doc["benchmark"] as? String) ?? String(stem.split(separator: "-").first ?? "")
        target = (doc["target"] as? String) ?? "all"
        commit = (doc["gitCommit"] as? String) ?? (doc["git_commit"] as? String) ?? (doc["commit"] as? String) ?? "unknown"
    }
}

/// One charted figure of a scenario: how to read it from a run, which way is better,
/// and whether it is a ratio to an in-run peer (the load-robust kind).
struct BenchMetric {
    enum Regression {
        /// Flagged when it moves the wrong way by more than the measured noise from the median of the previous five runs.
        case noise
        /// A count that must stay 0 (lost messages): any value above 0 is flagged.
        case mustBeZero
        /// Charted, never flagged (an absolute figure whose scenario has a ratio that is flagged instead).
        case none
    }

    var key: String
    var title: String
    var higherIsBetter: Bool
    var regression: Regression
    /// (series, value) pairs one run contributes: usually one, named by its target.
    var extract: (BenchRun) -> [(String, Double)]

    static func number(_ v: Any?) -> Double? {
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        if let s = v as? String { return Double(s) }
        return nil
    }

    /// A top-level figure (or a path through nested objects) of the run, series = its target
    /// (or what `series` names).
    static func field(_ key: String, _ title: String, higherIsBetter: Bool, regression: Regression,
                      path: [String], excluding: Set<String> = [],
                      series: @escaping (BenchRun) -> String = { $0.target }) -> BenchMetric {
        BenchMetric(key: key, title: title, higherIsBetter: higherIsBetter, regression: regression) { run in
            guard !excluding.contains(run.target) else { return [] }
            var value: Any? = run.doc
            for p in path { value = (value as? [String: Any])?[p] }
            return number(value).map { [(series(run), $0)] } ?? []
        }
    }

    /// A backlog run's series: its target, the count queued and whether part of it
    /// stayed on disk (max-queued-in-memory). The process's own ~40 MB weighs
    /// differently per message at 250k and at 1M, and a paged-out backlog holds
    /// less per message, so only runs of one kind compare.
    static func backlogSeries(_ run: BenchRun) -> String {
        let count = number(run.doc["accepted"]) ?? 0
        let label = count >= 1_000_000 ? "\(Int(count / 1_000_000))M" : "\(Int(count / 1_000))k"
        let config = run.doc["config"] as? [String: Any]
        let onDisk = (number(config?["maxQueuedInMemory"]) ?? 0) > 0 ? " paged" : ""
        return "\(run.target) \(label)\(onDisk)"
    }

    /// The figures charted per scenario (issue 17: at least relay, relay-100k, isp-mix, backlog).
    static func metrics(for scenario: String) -> [BenchMetric] {
        switch scenario {
        case "relay", "relay-100k", "relay-tls":
            let peers: Set<String> = ["postfix", "harness"]
            return [
                field("overPostfix", "Peregrine ÷ Postfix, delivered/s in the same run", higherIsBetter: true,
                      regression: .noise, path: ["deliveredPerSecondOverPeer", "postfix"], excluding: peers),
                field("overHarness", "Peregrine ÷ harness ceiling (loadgen → sink), delivered/s in the same run",
                      higherIsBetter: true, regression: .noise, path: ["deliveredPerSecondOverPeer", "harness"], excluding: peers),
                field("deliveredPerSecond", "delivered/s (absolute)", higherIsBetter: true, regression: .none,
                      path: ["deliveredPerSecond"]),
                field("cpuPer10k", "MTA CPU seconds per 10k messages", higherIsBetter: false, regression: .none,
                      path: ["mtaCpuSecondsPer10k"]),
                field("p99", "inject → deliver p99 ms", higherIsBetter: false, regression: .none, path: ["injectToDeliverMs", "p99"]),
                field("lost", "lost messages", higherIsBetter: false, regression: .mustBeZero, path: ["lost"]),
            ]
        case "relay-esp":
            // Series per backend, key and thread count (the target): epoll-rsa2048-t1, epoll-rsa2048-t2, ...
            return [
                field("dkimRatio", "DKIM overhead ratio: (CPU/msg − TLS-only CPU/msg) ÷ in-run openssl sign time",
                      higherIsBetter: false, regression: .noise, path: ["dkimOverheadRatio"]),
                field("threadsSpeedup", "delivered/s ÷ the threads 1 run of the same invocation", higherIsBetter: true,
                      regression: .none, path: ["deliveredPerSecondOverThreads1"]),
                field("deliveredPerSecond", "delivered/s (absolute)", higherIsBetter: true, regression: .none,
                      path: ["deliveredPerSecond"]),
                field("cpuPer10k", "MTA CPU seconds per 10k messages", higherIsBetter: false, regression: .none,
                      path: ["mtaCpuSecondsPer10k"]),
                field("lost", "lost messages", higherIsBetter: false, regression: .mustBeZero, path: ["lost"]),
            ]
        case "http-relay":
            // Series per backend and recipients per call (the target): epoll-r1, epoll-r100, ...
            return [
                field("overSMTP", "API recipients delivered/s ÷ the SMTP relay's delivered/s in the same run",
                      higherIsBetter: true, regression: .noise, path: ["recipientsDeliveredPerSecondOverSMTP"]),
                field("recipientsDeliveredPerSecond", "recipients delivered/s (absolute)", higherIsBetter: true,
                      regression: .none, path: ["recipientsDeliveredPerSecond"]),
                field("cpuPerRecipient", "MTA CPU µs per recipient", higherIsBetter: false, regression: .none,
                      path: ["mtaCpuMicrosecondsPerRecipient"]),
                field("lost", "lost messages", higherIsBetter: false, regression: .mustBeZero, path: ["lost"]),
            ]
        case "isp-mix":
            return [
                field("elapsed", "seconds to inject and drain the mix", higherIsBetter: false, regression: .noise, path: ["elapsedSeconds"]),
                field("delivered", "delivered", higherIsBetter: true, regression: .none, path: ["delivered"]),
                field("deferrals", "deferrals at the sink", higherIsBetter: false, regression: .none, path: ["deferralsAtSink"]),
                field("lost", "lost messages", higherIsBetter: false, regression: .mustBeZero, path: ["lost"]),
            ]
        case "backlog":
            // Series per target and count queued (backlogSeries): epoll 1M, epoll 250k, epoll 5M paged.
            return [
                field("drained", "drained/s after the sink comes back", higherIsBetter: true, regression: .noise,
                      path: ["drainedPerSecond"], series: backlogSeries),
                field("rss", "RSS with the queue deferred, MB", higherIsBetter: false, regression: .none,
                      path: ["rssWithQueueDeferredMB"], series: backlogSeries),
                field("rssPerMessage", "RSS per queued message, bytes", higherIsBetter: false, regression: .noise,
                      path: ["rssBytesPerQueuedMessage"], series: backlogSeries),
                field("lost", "lost messages", higherIsBetter: false, regression: .mustBeZero, path: ["lost"],
                      series: backlogSeries),
            ]
        case "crash":
            return [
                field("lost", "lost messages after SIGKILL rounds", higherIsBetter: false, regression: .mustBeZero, path: ["lost"]),
                field("dup", "duplicates after SIGKILL rounds", higherIsBetter: false, regression: .none, path: ["duplicates"]),
            ]
        case "echo":
            return [BenchMetric(key: "rps", title: "echo requests/s per backend", higherIsBetter: true, regression: .noise) { run in
                ((run.doc["backends"] as? [[String: Any]]) ?? []).compactMap { b in
                    guard let name = b["backend"] as? String, let v = number(b["requests_per_second"]) else { return nil }
                    return (name, v)
                }
            }]
        default:
            return []
        }
    }

    static let scenarioOrder = ["relay", "relay-100k", "relay-tls", "relay-esp", "http-relay", "isp-mix", "backlog", "crash", "echo"]
}

/// One point of a chart.
struct ChartPoint {
    var run: BenchRun
    var series: String
    var value: Double
    var regressed = false
    var baseline: Double?
}

/// The regression rule, in one place so the page can state it and `compare` can use it.
enum RegressionRule {
    static let window = 5
    static let minimumHistory = 3

    static let statement = """
    A point is flagged when its figure is worse than the median of the previous \(window) runs of the same series \
    (same scenario, metric and backend; at least \(minimumHistory) earlier runs) by more than the measured run-to-run \
    noise of that metric. The noise is measured from the results themselves: the median, over every series of the \
    metric, of the relative change between consecutive runs |xᵢ − xᵢ₋₁| / xᵢ₋₁ (at least 3 such pairs, else the \
    metric is not flagged and says so). Ratios to an in-run peer (Postfix, the harness ceiling) are what is flagged \
    for the relay scenarios, because load on the shared machine moves the absolute figures of every target in a \
    run together; lost messages are flagged whenever they are above 0.
    """

    /// The metric's noise: median relative successive change across its series; nil with fewer than 3 pairs.
    static func noise(_ series: [[Double]]) -> Double? {
        var changes: [Double] = []
        for values in series where values.count > 1 {
            for i in 1..<values.count where values[i - 1] != 0 { changes.append(abs(values[i] - values[i - 1]) / abs(values[i - 1])) }
        }
        guard changes.count >= 3 else { return nil }
        return median(changes)
    }

    static func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Whether `value` is a regression against `history` (oldest first) given the metric's noise.
    static func isRegression(_ value: Double, history: [Double], noise: Double?, metric: BenchMetric) -> (Bool, Double?) {
        switch metric.regression {
        case .none: return (false, nil)
        case .mustBeZero: return (value > 0, 0)
        case .noise:
            guard history.count >= minimumHistory, let noise else { return (false, nil) }
            let base = median(Array(history.suffix(window)))
            let worse = metric.higherIsBetter ? value < base * (1 - noise) : value > base * (1 + noise)
            return (worse, base)
        }
    }
}

/// A scenario's metric over time: the points per series with their regression flags.
struct MetricChart {
    var scenario: String
    var metric: BenchMetric
    var points: [ChartPoint]
    var noise: Double?
    /// The runs on the x axis in time order (one column per run start time).
    var columns: [String]

    static func build(runs: [BenchRun]) -> [MetricChart] {
        let scenarios = Set(runs.map(\.scenario))
        let ordered = BenchMetric.scenarioOrder.filter { scenarios.contains($0) }
        var charts: [MetricChart] = []
        for scenario in ordered {
            let mine = runs.filter { $0.scenario == scenario }
            for metric in BenchMetric.metrics(for: scenario) {
                var points: [ChartPoint] = []
                for run in mine { for (series, v) in metric.extract(run) { points.append(ChartPoint(run: run, series: series, value: v)) } }
                guard !points.isEmpty else { continue }
                let bySeries = Dictionary(grouping: points.indices, by: { points[$0].series })
                let noise = RegressionRule.noise(bySeries.values.map { $0.map { points[$0].value } })
                for (_, indices) in bySeries {
                    var history: [Double] = []
                    for i in indices {
                        let (bad, base) = RegressionRule.isRegression(points[i].value, history: history, noise: noise, metric: metric)
                        points[i].regressed = bad
                        points[i].baseline = base
                        history.append(points[i].value)
                    }
                }
                let columns = Array(Set(points.map(\.run.startedAt))).sorted()
                charts.append(MetricChart(scenario: scenario, metric: metric, points: points, noise: noise, columns: columns))
            }
        }
        return charts
    }
}
