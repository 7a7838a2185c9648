import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSpool

/// `peregrine-bench suppression`: the suppression list at scale (issue 16).
/// Writes a log of N add records (default 10,000,000 distinct addresses over
/// 100,000 domains), then, in a fresh child process so that the generator's
/// memory is not counted, loads it with `SuppressionList.open` (the daemon's
/// start-up path) and reports the load time, VmHWM/VmRSS and single-thread
/// lookups/s through `reason(forRecipient:)` (the RCPT check: lower-casing,
/// two digests, the lock), half hits and half misses.
/// Targets: load < 30 s, memory < 1 GB.
func runSuppressionBench(arguments: [String]) -> Int32 {
    var entries = 10_000_000, outputDir = "results", write = true, loadPath: String?
    var i = 0
    while i < arguments.count {
        let a = arguments[i], v = i + 1 < arguments.count ? arguments[i + 1] : nil
        switch a {
        case "--entries": guard let v, let n = Int(v), n > 0 else { return 2 }; entries = n
        case "--output-dir": guard let v else { return 2 }; outputDir = v
        case "--no-results": write = false; i += 1; continue
        case "--load": guard let v else { return 2 }; loadPath = v  // the child's half
        default:
            fputs("usage: peregrine-bench suppression [--entries N] [--output-dir DIR] [--no-results]\n", stderr)
            return 2
        }
        i += 2
    }
    if let loadPath { return suppressionLoadChild(path: loadPath, entries: entries) }

    let dir = NSTemporaryDirectory() + "peregrine-bench-suppression-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/suppression.log"
    let loadBefore = BenchEnvironment.loadAverage()
    fputs("== writing \(entries) add records to \(path)\n", stderr)
    let genStart = monotonicNanoseconds()
    guard let fileBytes = writeSuppressionLog(path: path, entries: entries) else { fputs("cannot write \(path)\n", stderr); return 1 }
    let genSeconds = Double(monotonicNanoseconds() - genStart) / 1e9
    fputs(String(format: "   %.1f MB in %.1f s\n", Double(fileBytes) / 1e6, genSeconds), stderr)

    guard let out = BenchEnvironment.commandOutput("/proc/self/exe", ["suppression", "--load", path, "--entries", "\(entries)"]),
          let json = out.split(separator: "\n").last.flatMap({ try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
    else { fputs("the load child failed\n", stderr); return 1 }
    let loadSeconds = json["loadSeconds"] as? Double ?? -1
    let hwm = json["vmHWMKB"] as? Int ?? -1, rss = json["vmRSSKB"] as? Int ?? -1
    let lookups = json["lookupsPerSecond"] as? Double ?? -1
    let loaded = json["entries"] as? Int ?? -1
    print(String(format: "suppression: %d entries (%.0f MB log) loaded in %.2f s; VmHWM %d MB, VmRSS %d MB, table %d MB; %.2f M lookups/s (one thread)",
                 loaded, Double(fileBytes) / 1e6, loadSeconds, hwm / 1024, rss / 1024, (json["tableBytes"] as? Int ?? 0) >> 20, lookups / 1e6))
    let ok = loaded == entries && loadSeconds < 30 && hwm < 1_048_576 && (json["hitsFound"] as? Bool) == true
    print(ok ? "targets met (load < 30 s, memory < 1 GB, every hit found, no miss found)" : "TARGETS MISSED")
    let doc: [String: Any] = [
        "scenario": "suppression", "date": BenchEnvironment.today(), "machine": BenchEnvironment.machine(),
        "gitCommit": BenchEnvironment.gitCommit(), "loadAverageBefore": loadBefore, "loadAverageAfter": BenchEnvironment.loadAverage(),
        "entries": entries, "logBytes": fileBytes, "generateSeconds": genSeconds, "load": json,
        "targets": ["loadSeconds": 30, "memoryKB": 1_048_576], "targetsMet": ok,
    ]
    if write {
        let p = BenchEnvironment.runResultPath(directory: outputDir, scenario: "suppression", target: "\(entries)", startedAt: Date())
        if BenchEnvironment.writeJSON(doc, to: p) { fputs("   wrote \(p)\n", stderr) } else { fputs("cannot write \(p)\n", stderr) }
    }
    return ok ? 0 : 1
}

/// The i-th bench address: distinct for every i, 100,000 domains.
private func benchAddress(_ i: Int, into out: inout [UInt8]) {
    out.append(contentsOf: "user.\(i &* 2_654_435_761 % 1_000_000_007)-\(i)@domain\(i % 100_000).example".utf8)
}

private func writeSuppressionLog(path: String, entries: Int) -> Int64? {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = SuppressionLog.magic
    var text: [UInt8] = []
    var total: Int64 = 0
    for i in 0..<entries {
        text.removeAll(keepingCapacity: true)
        benchAddress(i, into: &text)
        SuppressionLog.encode(.add, reason: i % 7 == 0 ? .complaint : .bounce, time: 1_764_950_400, text: text, into: &buffer)
        if buffer.count >= 4 << 20 || i == entries - 1 {
            var written = 0
            if buffer.withUnsafeBytes({ Posix.writeAll(fd, $0, written: &written) }) != nil { return nil }
            total += Int64(buffer.count)
            buffer.removeAll(keepingCapacity: true)
        }
    }
    guard fsync(fd) == 0 else { return nil }
    return total
}

private func suppressionLoadChild(path: String, entries: Int) -> Int32 {
    let start = monotonicNanoseconds()
    guard let (list, report) = try? SuppressionList.open(path: path) else { fputs("cannot load \(path)\n", stderr); return 1 }
    let loadSeconds = Double(monotonicNanoseconds() - start) / 1e9
    func status(_ key: String) -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        return -1
    }
    let hwm = status("VmHWM"), rss = status("VmRSS")
    // Probes: 1,000,000 addresses in one flat buffer, half on the list (upper-cased, as a client may send them).
    let probeCount = 1_000_000
    var flat: [UInt8] = [], bounds: [Int] = [0]
    var text: [UInt8] = []
    for p in 0..<probeCount {
        text.removeAll(keepingCapacity: true)
        if p % 2 == 0 {
            benchAddress((p &* 7919) % entries, into: &text)
            if let f = text.firstIndex(of: UInt8(ascii: "u")) { text[f] = UInt8(ascii: "U") }
        } else {
            text.append(contentsOf: "absent\(p)@domain\(p % 100_000).example".utf8)
        }
        flat += text
        bounds.append(flat.count)
    }
    var hits = 0, misses = 0
    let rounds = 10
    let lookStart = monotonicNanoseconds()
    flat.withUnsafeBytes { all in
        for _ in 0..<rounds {
            for p in 0..<probeCount {
                let address = UnsafeRawBufferPointer(rebasing: all[bounds[p]..<bounds[p + 1]])
                if list.reason(forRecipient: address) != nil { hits += 1 } else { misses += 1 }
            }
        }
    }
    let lookSeconds = Double(monotonicNanoseconds() - lookStart) / 1e9
    let perSecond = Double(probeCount * rounds) / lookSeconds
    let hitsFound = hits == probeCount / 2 * rounds && misses == probeCount / 2 * rounds
    let json: [String: Any] = ["loadSeconds": loadSeconds, "entries": report.entries, "records": report.records,
                               "vmHWMKB": hwm, "vmRSSKB": rss, "tableBytes": list.memoryBytes,
                               "lookups": probeCount * rounds, "lookupSeconds": lookSeconds, "lookupsPerSecond": perSecond,
                               "hits": hits, "misses": misses, "hitsFound": hitsFound]
    guard let data = try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]) else { return 1 }
    print(String(decoding: data, as: UTF8.self))
    return 0
}
