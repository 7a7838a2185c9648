#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineSpool

// peregrine-bench spool: the durable spool on each backend.
//  1. Append throughput (msgs/s, MB/s) for 4 KB and 100 KB messages with group
//     commit (many appends in flight, one fdatasync covers a batch) and with
//     one fsync per message (one append in flight at a time), side by side.
//  2. Recovery time for a spool of N (default 1M) queued 4 KB messages.
//  3. Memory with those N messages deferred: the recovered envelopes and live
//     set held in RAM, bodies on disk (VmHWM / VmRSS from /proc/self/status).

private let spoolUsage = """
usage: peregrine-bench spool [--backends io_uring,epoll,dispatch] [--dir DIR] [--output FILE]
                             [--group-count N] [--single-count N] [--in-flight N]
                             [--recovery-messages N] [--skip-recovery]
  --group-count N         messages per group-commit run (default 20000 for 4 KB, 2000 for 100 KB)
  --single-count N        messages per fsync-per-message run (default 1000 for 4 KB, 300 for 100 KB)
  --in-flight N           appends outstanding in group-commit mode (default 256)
  --recovery-messages N   4 KB messages in the recovery/RSS spool (default 1000000)
  --dir DIR               scratch directory (default /tmp/peregrine-spool-bench; removed afterwards)
  --output FILE           JSON path (default results/spool-<YYYY-MM-DD>.json)
"""

private struct AppendFigures {
    var backend: String
    var mode: String            // "group-commit" | "fsync-per-message"
    var bodyBytes: Int
    var status = "ok"
    var messages = 0
    var seconds = 0.0
    var fsyncs = 0
    var bytes: Int64 = 0
    var messagesPerSecond: Double { seconds > 0 ? Double(messages) / seconds : 0 }
    var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1e6 : 0 }
    var json: [String: Any] {
        ["backend": backend, "mode": mode, "body_bytes": bodyBytes, "status": status, "messages": messages,
         "seconds": seconds, "fsyncs": fsyncs, "bytes_written": bytes,
         "messages_per_second": messagesPerSecond.rounded(), "megabytes_per_second": (megabytesPerSecond * 10).rounded() / 10,
         "messages_per_fsync": fsyncs > 0 ? (Double(messages) / Double(fsyncs) * 10).rounded() / 10 : 0]
    }
}

private func procStatus(_ key: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
        return Int(line.split(separator: " ").dropFirst().first ?? "")  // kB
    }
    return nil
}

private func seconds(since start: UInt64) -> Double { Double(monotonicNanoseconds() - start) / 1e9 }

/// User + system CPU seconds of this process: robust against a busy machine, unlike wall time.
private func cpuSeconds() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return s(u.ru_utime) + s(u.ru_stime)
}

/// Appends `count` messages of ~`bodyBytes` with `inFlight` outstanding; timed from
/// the first append to the last durable callback.
private func appendRun<L: EventLoop>(_ type: L.Type, dir: String, bodyBytes: Int, count: Int, inFlight: Int,
                                     mode: String) -> AppendFigures {
    var fig = AppendFigures(backend: L.kind.rawValue, mode: mode, bodyBytes: bodyBytes)
    let loop: L
    do { loop = try L() } catch { fig.status = "skipped: \(error)"; return fig }
    _ = system("rm -rf '\(dir)'")
    let writer: SpoolWriter<L>
    do { writer = try SpoolWriter(loop: loop, directory: dir + "/loop-0") } catch {
        fig.status = "failed: \(error)"; return fig
    }
    let body = UnsafeMutableRawBufferPointer.allocate(byteCount: bodyBytes, alignment: 16)
    defer { body.deallocate() }
    SpoolTestBody.fill(id: MessageID(hi: 1, lo: 1), body)
    let envelope = SpoolTestBody.envelope(id: MessageID(hi: 1, lo: 1), recipients: 2)
    var started = 0, done = 0
    var failed: SpoolError?
    var t0: UInt64 = 0
    func one() {
        guard started < count else { return }
        started += 1
        writer.append(envelope: envelope, body: UnsafeRawBufferPointer(body)) { r in
            if case .failure(let e) = r { failed = e; loop.stop(); return }
            done += 1
            if done == count { loop.stop() } else { one() }
        }
    }
    loop.scheduleTimer(after: 0) {
        t0 = monotonicNanoseconds()
        for _ in 0 ..< inFlight { one() }
    }
    loop.run()
    fig.seconds = seconds(since: t0)
    fig.messages = done
    fig.fsyncs = writer.stats.fsyncs
    fig.bytes = writer.stats.bytesWritten
    if let failed { fig.status = "failed: \(failed)" }
    _ = system("rm -rf '\(dir)'")
    return fig
}

private func openAppend(_ type: any EventLoop.Type, dir: String, bodyBytes: Int, count: Int, inFlight: Int,
                        mode: String) -> AppendFigures {
    func go<L: EventLoop>(_ t: L.Type) -> AppendFigures {
        appendRun(t, dir: dir, bodyBytes: bodyBytes, count: count, inFlight: inFlight, mode: mode)
    }
    return go(type)
}

func runSpoolBench(arguments: [String]) -> Int32 {
    var backends = BackendKind.allCases
    var dir = "/tmp/peregrine-spool-bench"
    var output: String?
    var groupCount: Int?
    var singleCount: Int?
    var inFlight = 256
    var recoveryMessages = 1_000_000
    var skipRecovery = false
    var i = 0
    while i < arguments.count {
        let a = arguments[i]
        let v = i + 1 < arguments.count ? arguments[i + 1] : nil
        switch (a, v) {
        case ("--skip-recovery", _): skipRecovery = true; i += 1; continue
        case ("--backends", let v?):
            var list: [BackendKind] = []
            for name in v.split(separator: ",") {
                switch BackendKind.parse(String(name)) {
                case .success(let k): list.append(k)
                case .failure(let e): fputs("peregrine-bench spool: \(e)\n", stderr); return 2
                }
            }
            backends = list
        case ("--dir", let v?): dir = v
        case ("--output", let v?): output = v
        case ("--group-count", let v?): groupCount = Int(v)
        case ("--single-count", let v?): singleCount = Int(v)
        case ("--in-flight", let v?): inFlight = Int(v) ?? inFlight
        case ("--recovery-messages", let v?): recoveryMessages = Int(v) ?? recoveryMessages
        case ("-h", _), ("--help", _): print(spoolUsage); return 0
        default:
            fputs("peregrine-bench spool: bad argument '\(a)'\n\(spoolUsage)\n", stderr)
            return 2
        }
        i += 2
    }

    let loadBefore = BenchEnvironment.loadAverage()
    var appendResults: [AppendFigures] = []
    print("spool append (bodies on \(dir)):")
    print("backend    body     mode                 msgs/s      MB/s   msgs/fsync")
    for kind in backends {
        for size in [4096, 102_400] {
            let g = groupCount ?? (size == 4096 ? 20_000 : 2_000)
            let s = singleCount ?? (size == 4096 ? 1_000 : 300)
            for (mode, count, flight) in [("group-commit", g, inFlight), ("fsync-per-message", s, 1)] {
                let f = openAppend(kind.loopType, dir: dir, bodyBytes: size, count: count, inFlight: flight, mode: mode)
                appendResults.append(f)
                let line = "\(kind.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) "
                    + "\(String(size / 1024).padding(toLength: 4, withPad: " ", startingAt: 0))KB  "
                    + "\(mode.padding(toLength: 18, withPad: " ", startingAt: 0))"
                if f.status == "ok" {
                    print(line + String(format: " %10.0f  %8.1f  %10.1f", f.messagesPerSecond, f.megabytesPerSecond,
                                        f.fsyncs > 0 ? Double(f.messages) / Double(f.fsyncs) : 0))
                } else {
                    print(line + " " + f.status)
                }
            }
        }
    }

    var recovery: [String: Any] = ["status": "skipped"]
    if !skipRecovery {
        recovery = recoveryBench(dir: dir + "/recovery", messages: recoveryMessages)
    }

    let date = BenchEnvironment.today()
    let kernel = BenchEnvironment.kernelRelease()
    let doc: [String: Any] = [
        "scenario": "spool",
        "date": ISO8601DateFormatter().string(from: Date()),
        "kernel": kernel,
        "cpus": sysconf(Int32(_SC_NPROCESSORS_ONLN)),
        "directory": dir,
        "load_average_start": loadBefore,
        "load_average_end": BenchEnvironment.loadAverage(),
        "append": appendResults.map(\.json),
        "recovery": recovery,
        "notes": "group-commit: \(inFlight) appends in flight, maxCommitDelay 0; fsync-per-message: one append "
            + "in flight, so each commit covers exactly one message. Envelope: 2 recipients (append), 1 (recovery). "
            + "Wall times depend on the machine's load (see load_average_*): on a shared 2-core box the fsync "
            + "latency and hence the fsync-per-message figures are noisy; recovery CPU seconds are the steadier figure.",
    ]
    let path = output ?? "results/spool-\(date).json"
    do {
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    } catch {
        fputs("peregrine-bench spool: cannot write \(path): \(error)\n", stderr)
        return 1
    }
    return 0
}

/// Builds a spool of `messages` 4 KB messages (plain writes), then times
/// recovery and measures what holding them deferred costs in RAM.
private func recoveryBench(dir: String, messages: Int) -> [String: Any] {
    _ = system("rm -rf '\(dir)'")
    defer { _ = system("rm -rf '\(dir)'") }
    let stream = dir + "/loop-0"
    let hwmBefore = procStatus("VmHWM") ?? 0
    let t0 = monotonicNanoseconds()
    do {
        let w = try SpoolSyncWriter(directory: stream)
        let body = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { body.deallocate() }
        SpoolTestBody.fill(id: MessageID(hi: 2, lo: 2), body)
        var envelope = SpoolTestBody.envelope(id: MessageID(hi: 2, lo: 2), recipients: 1)
        for i in 0 ..< messages {
            envelope.receivedAt = Int64(i)
            try w.append(id: MessageID(hi: 2, lo: UInt64(i)), envelope: envelope, body: UnsafeRawBufferPointer(body))
        }
        try w.sync()
    } catch {
        return ["status": "failed building the spool: \(error)"]
    }
    let buildSeconds = seconds(since: t0)
    var diskBytes: Int64 = 0
    for n in SpoolRecovery.listSegments(directory: stream) {
        var st = stat()
        if stat(SpoolRecovery.segmentPath(directory: stream, number: n), &st) == 0 { diskBytes += Int64(st.st_size) }
    }
    // Cold cache if we are allowed to drop it (root); recorded either way.
    sync()
    let dropped = (try? "3\n".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)) != nil
    print("recovery: spool of \(messages) x 4 KB built in \(String(format: "%.1f", buildSeconds)) s "
          + "(\(diskBytes / 1_000_000) MB), page cache \(dropped ? "dropped" : "warm")")
    let t1 = monotonicNanoseconds()
    let c1 = cpuSeconds()
    let result = SpoolRecovery.recover(directory: stream, mode: .repair, log: { _ in })
    let recoverySeconds = seconds(since: t1)
    let recoveryCPU = cpuSeconds() - c1
    guard case .success(let r) = result else {
        if case .failure(let e) = result { return ["status": "failed: \(e)"] }
        return ["status": "failed"]
    }
    // Hold what a daemon keeps for deferred messages: envelopes + live set (bodies on disk).
    let held = r.messages
    let hwm = procStatus("VmHWM") ?? 0
    let rss = procStatus("VmRSS") ?? 0
    defer { withExtendedLifetime(held) {} }
    print(String(format: "recovery: %d live messages in %.2f s (%.0f msgs/s, %.0f MB/s); VmHWM %d MB, VmRSS %d MB (before: %d MB)",
                 held.count, recoverySeconds, Double(held.count) / recoverySeconds,
                 Double(diskBytes) / recoverySeconds / 1e6, hwm / 1024, rss / 1024, hwmBefore / 1024))
    // Again with the segments now in the page cache (read-only: what spool-check does).
    let t2 = monotonicNanoseconds()
    let c2 = cpuSeconds()
    let warm = SpoolRecovery.recover(directory: stream, mode: .readOnly, log: { _ in })
    let warmSeconds = seconds(since: t2)
    let warmCPU = cpuSeconds() - c2
    let warmCount = (try? warm.get())?.messages.count ?? 0
    print(String(format: "recovery (warm cache): %d live messages in %.2f s (%.2f s CPU; cold run %.2f s CPU)",
                 warmCount, warmSeconds, warmCPU, recoveryCPU))
    return ["status": "ok", "messages": messages, "warm_recovery_seconds": warmSeconds,
            "recovery_cpu_seconds": recoveryCPU, "warm_recovery_cpu_seconds": warmCPU, "live_messages": held.count, "body_bytes": 4096,
            "disk_bytes": diskBytes, "build_seconds": buildSeconds, "recovery_seconds": recoverySeconds,
            "page_cache": dropped ? "dropped" : "warm",
            "recovery_messages_per_second": (Double(held.count) / recoverySeconds).rounded(),
            "vm_hwm_kb": hwm, "vm_rss_kb": rss, "vm_hwm_before_kb": hwmBefore,
            "rss_target_kb": 1_048_576, "rss_under_target": hwm < 1_048_576]
}
