import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `peregrine-bench backlog`: the sink is down while N messages (4 KB) are
/// injected, so the whole queue is deferred; the daemon's RSS is measured
/// then (target: 1M messages in under 1 GB). Then the sink comes up, every
/// queue is scheduled (`peregrine ctl schedule */*`), and the drain is timed.
/// Reconciled by ids: lost must be 0.
func runBacklogBench(arguments: [String]) -> Int32 {
    let usage = """
    usage: peregrine-bench backlog [--backend epoll|io_uring|dispatch|all] [--count N] [--size BYTES]
                                   [--connections N] [--drain-timeout S] [--output-dir DIR]
                                   [--max-queued-in-memory N]   (0: unlimited, the default)
                                   [--retry-after DURATION]     (default 5s)
    """
    let defaults = ["backend": "epoll", "count": "1000000", "size": "4096", "connections": "32",
                    "drain-timeout": "3600", "output-dir": "results", "max-queued-in-memory": "0",
                    "retry-after": "5s"]
    let options: ScenarioOptions
    switch ScenarioOptions.parse(arguments, defaults: defaults, usage: usage) {
    case .success(let o): options = o
    case .failure(let e): fputs("peregrine-bench backlog: \(e.message)\n", stderr); return 2
    }
    var rows: [[String]] = []
    var failed = false
    do {
        for backend in try options.backends() {
            let r = try backlogRun(options: options, backend: backend)
            rows.append(r.row)
            if !r.ok { failed = true }
        }
    } catch {
        fputs("peregrine-bench backlog: \(error)\n", stderr)
        return 1
    }
    printBenchTable(title: "backlog: sink down during injection, then up (target: 1M queued 4 KB messages in < 1 GB RSS)",
                    header: ["backend", "accepted", "injected/s", "RSS deferred MB", "peak RSS MB", "drain s", "drained/s",
                             "delivered", "lost", "dup"], rows: rows)
    return failed ? 1 : 0
}

private func backlogRun(options: ScenarioOptions, backend: String) throws -> (row: [String], ok: Bool) {
    let rig = try ScenarioRig(scenario: "backlog")
    defer { rig.cleanUp() }
    let count = try options.int("count")
    let size = try options.int("size")
    let drainTimeout = try options.double("drain-timeout")
    // Beyond this many recipients the queue stays on disk only (issue 18); 0 keeps everything in memory.
    let inMemory = try options.int("max-queued-in-memory")
    // With the sink down every queued message is retried (and deferred again)
    // each retry-after: at 5s a loaded machine spends the injection re-deferring
    // the backlog. A longer one measures the same queue with the queues suspended.
    let retryAfter = options.string("retry-after")
    fputs("== backlog on \(backend): \(count) × \(size) bytes, sink down; scratch \(rig.work)\n", stderr)
    let sinkPort = rig.ports.sink, statsPort = rig.ports.stats, mtaPort = rig.ports.mta, mgmtPort = rig.ports.mgmt
    let config = """
    smtp-listener \(rig.ip):\(mtaPort)
    http-mgmt-port \(rig.ip):\(mgmtPort)
    spool \(rig.work)/spool
    host-name mta.peregrine.test
    max-queued-in-memory \(inMemory > 0 ? String(inMemory) : "unlimited")
    <source 127.0.0.0/8>
        always-allow-relaying yes
    </source>
    <domain *>
        route [\(rig.ip)]:\(sinkPort)
        max-smtp-out 32
        retry-after \(retryAfter)
        connect-timeout 5s
    </domain>

    """
    let configPath = rig.work + "/peregrine.conf"
    try config.write(toFile: configPath, atomically: true, encoding: .utf8)
    let daemon = try rig.startDaemon(configPath: configPath, backend: backend, smtpPort: mtaPort)
    var peakRSS = 0
    let loadIDs = rig.work + "/loadgen-ids.txt"
    let injectStart = Date()
    var lastReport = Date()
    let summary = try rig.runLoadgen(["--target", "\(rig.ip):\(mtaPort)", "--count", "\(count)", "--size", "\(size)",
                                      "--connections", options.string("connections"), "--messages-per-connection", "0",
                                      "--ids", loadIDs, "--backend", "epoll"],
                                     jsonPath: rig.work + "/loadgen.json", timeout: drainTimeout) { _ in
        peakRSS = max(peakRSS, rssBytes(daemon.pid))
        if Date().timeIntervalSince(lastReport) > 30 {
            lastReport = Date()
            let s = rig.status(mgmtPort: mgmtPort)
            fputs("   injecting: received \(s?["received"] ?? "?"), RSS \(rssBytes(daemon.pid) / 1_048_576) MB\n", stderr)
        }
    }
    let injectSeconds = Date().timeIntervalSince(injectStart)
    let accepted = summary["accepted"] as? Int ?? 0
    // Let the in-flight connection attempts fail and every message settle into the delayed set.
    var deferredStatus: [String: Any] = [:]
    let settleDeadline = Date().addingTimeInterval(60)
    while Date() < settleDeadline {
        if let s = rig.status(mgmtPort: mgmtPort) {
            deferredStatus = s
            // Everything received and the queues have met the dead sink (connection-level deferrals).
            if s["received"] as? Int ?? 0 >= accepted && s["queueDeferrals"] as? Int ?? 0 > 0 { break }
        }
        usleep(500_000)
    }
    usleep(1_000_000)
    let deferredRSS = rssBytes(daemon.pid)
    peakRSS = max(peakRSS, deferredRSS)
    let spoolBytes = directoryBytes(rig.work + "/spool")
    fputs("   queue deferred: \(accepted) accepted, RSS \(deferredRSS / 1_048_576) MB, spool \(spoolBytes / 1_048_576) MB\n", stderr)

    // The sink comes up; retry now.
    let sinkIDs = rig.work + "/sink-ids.txt"
    let sink = try rig.startSink(["--accept-all", "--listen", "\(rig.ip):\(sinkPort)", "--record-ids", sinkIDs,
                                  "--stats-port", "\(rig.ip):\(statsPort)", "--backend", "epoll", "--quiet"])
    let drainStart = Date()
    rig.ctl(mgmtPort: mgmtPort, configPath: configPath, ["schedule", "*/*"])
    var delivered = 0
    var lastChange = Date()
    var lastDelivery = drainStart
    var firstDelivery: Date?
    var samples: [[String: Any]] = []
    var lastSample = Date()
    let cpu0 = ProcessUsage.read(pid: daemon.pid)?.cpuSeconds ?? 0
    while Date().timeIntervalSince(drainStart) < drainTimeout {
        let recorded = (BenchNet.getJSON(ip: rig.ip, port: statsPort, path: "/stats")?["record_ids"] as? [String: Any])?["recorded"] as? Int ?? delivered
        if recorded != delivered {
            delivered = recorded; lastChange = Date(); lastDelivery = Date()
            if firstDelivery == nil { firstDelivery = Date() }
        }
        peakRSS = max(peakRSS, rssBytes(daemon.pid))
        let t = Date().timeIntervalSince(drainStart)
        BenchProgress.every2s("   backlog drain: \(Int(t)) s, \(delivered)/\(accepted) at the sink (\(Int(Double(delivered) / max(t, 1)))/s)")
        if Date().timeIntervalSince(lastSample) >= 10 {
            BenchProgress.finish()
            lastSample = Date()
            samples.append(["t": Int(Date().timeIntervalSince(drainStart)), "delivered": delivered, "rssMB": rssBytes(daemon.pid) / 1_048_576])
            fputs("   draining: \(delivered)/\(accepted) at the sink\n", stderr)
        }
        if delivered >= accepted { break }
        if Date().timeIntervalSince(lastChange) > 60 { break }
        usleep(200_000)
    }
    BenchProgress.finish()
    let drainSeconds = max(lastDelivery.timeIntervalSince(drainStart), 0.001)
    let cpu = (ProcessUsage.read(pid: daemon.pid)?.cpuSeconds ?? cpu0) - cpu0
    let finalStatus = rig.status(mgmtPort: mgmtPort) ?? [:]
    daemon.stop()
    sink.stop()
    let rec = ScenarioRig.reconcile(accepted: ScenarioRig.ids(loadIDs), seen: ScenarioRig.ids(sinkIDs))
    let drainRate = Double(rec.unique) / drainSeconds
    let figures: [String: Any] = [
        "config": ["mta": "peregrine", "backend": backend, "config": config, "count": count,
                   "maxQueuedInMemory": inMemory, "retryAfter": retryAfter],
        "messageSize": size,
        "accepted": accepted,
        "injectSeconds": injectSeconds,
        "injectedPerSecond": Double(accepted) / max(injectSeconds, 0.001),
        "rssWithQueueDeferredMB": Double(deferredRSS) / 1_048_576,
        "rssBytesPerQueuedMessage": accepted > 0 ? deferredRSS / accepted : 0,
        "mtaPeakRSSMB": Double(peakRSS) / 1_048_576,
        "underOneGB": deferredRSS < 1 << 30,
        "spoolBytesWhileDeferred": spoolBytes,
        "statusWhileDeferred": deferredStatus,
        "secondsToFirstDelivery": firstDelivery.map { $0.timeIntervalSince(drainStart) } ?? -1,
        "drainSeconds": drainSeconds,
        "drainedPerSecond": drainRate,
        "drainCpuSeconds": cpu,
        "deliveredUnique": rec.unique,
        "lost": rec.lost.count,
        "lostSample": Array(rec.lost.prefix(10)),
        "duplicates": rec.duplicates,
        "statusAtEnd": finalStatus,
        "drainProgress": samples,
        "loadgen": summary,
        "summary": [["accepted", "\(accepted)"], ["RSS deferred MB", fmt(Double(deferredRSS) / 1_048_576)],
                    ["drain s", fmt(drainSeconds)], ["drained/s", fmt(drainRate, 0)], ["lost", "\(rec.lost.count)"], ["dup", "\(rec.duplicates)"]],
    ]
    rig.writeResult(target: backend, figures: figures, outputDir: options.string("output-dir"))
    let row = [backend, "\(accepted)", fmt(Double(accepted) / max(injectSeconds, 0.001), 0), fmt(Double(deferredRSS) / 1_048_576),
               fmt(Double(peakRSS) / 1_048_576), fmt(drainSeconds), fmt(drainRate, 0), "\(rec.unique)", "\(rec.lost.count)", "\(rec.duplicates)"]
    return (row, rec.lost.isEmpty && accepted > 0)
}

/// Bytes in the files under `path`.
func directoryBytes(_ path: String) -> Int {
    guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total = 0
    while let f = e.nextObject() as? String {
        if let a = try? FileManager.default.attributesOfItem(atPath: path + "/" + f), let n = a[.size] as? Int { total += n }
    }
    return total
}
