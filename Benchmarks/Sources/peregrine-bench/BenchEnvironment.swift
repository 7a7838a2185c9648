import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// What every results file records about where it was measured.
enum BenchEnvironment {
    static func machine() -> [String: Any] {
        var u = utsname()
        uname(&u)
        func field<T>(_ v: T) -> String {
            withUnsafeBytes(of: v) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        return ["cores": sysconf(Int32(_SC_NPROCESSORS_ONLN)), "kernel": field(u.release), "machine": field(u.machine),
                "memoryBytes": sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE)), "cpuModel": cpuModel()]
    }

    /// /proc/cpuinfo's first "model name" (figures from different CPUs are not comparable).
    static func cpuModel() -> String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        for line in info.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") { return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return "unknown"
    }

    /// "2026-12-05T12:06:33Z" (UTC, second precision): when a run started or ended.
    static func isoTimestamp(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec)
    }

    /// The run's part of a results file name, "2026-12-05T120633Z": one file per run,
    /// so a rerun on the same day never overwrites an earlier one (issue 17).
    static func fileStamp(_ date: Date) -> String {
        isoTimestamp(date).replacingOccurrences(of: ":", with: "")
    }

    /// results/<scenario>-<target>-<stamp>.json; a second run in the same second gets "-2", "-3" …
    static func runResultPath(directory: String, scenario: String, target: String, startedAt: Date) -> String {
        let base = "\(directory)/\(scenario)-\(target)-\(fileStamp(startedAt))"
        var path = base + ".json"
        var n = 2
        while FileManager.default.fileExists(atPath: path) { path = "\(base)-\(n).json"; n += 1 }
        return path
    }

    static func kernelRelease() -> String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// /proc/loadavg's three averages: how busy the shared machine was.
    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
    }

    static func gitCommit() -> String {
        commandOutput("/usr/bin/git", ["rev-parse", "HEAD"])?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
    }

    static func commandOutput(_ path: String, _ args: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return p.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
    }

    static func today() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))"
    }

    /// Writes `object` as pretty JSON, creating results/ if needed.
    static func writeJSON(_ object: [String: Any], to path: String) -> Bool {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else {
            return false
        }
        return FileManager.default.createFile(atPath: path, contents: data + Data("\n".utf8))
    }

    /// The directory holding this executable (peregrine, peregrine-sink, peregrine-loadgen live there too).
    static func binDirectory() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }
}

/// When a run started and how loaded the machine was then; `stamp` adds the end to a results document.
struct RunClock {
    let startedAt = Date()
    let loadAverageStart = BenchEnvironment.loadAverage()

    /// The fields every results file carries so its figures can be normalised and ordered:
    /// start and end (UTC), load average at both ends, commit, machine (cores, CPU model, kernel).
    func stamp(_ doc: inout [String: Any]) {
        doc["startedAt"] = BenchEnvironment.isoTimestamp(startedAt)
        doc["finishedAt"] = BenchEnvironment.isoTimestamp(Date())
        doc["loadAverageStart"] = loadAverageStart
        doc["loadAverageEnd"] = BenchEnvironment.loadAverage()
        doc["machine"] = BenchEnvironment.machine()
        doc["gitCommit"] = BenchEnvironment.gitCommit()
        doc["date"] = String(BenchEnvironment.isoTimestamp(startedAt).prefix(10))
    }
}

/// CPU time and memory of a process (and its waited-for children), from /proc.
struct ProcessUsage {
    var cpuSeconds: Double
    var rssBytes: Int
    var peakRSSBytes: Int

    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func read(pid: Int32) -> ProcessUsage? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
        guard fields.count > 14, let ut = Double(fields[11]), let st = Double(fields[12]),
              let cut = Double(fields[13]), let cst = Double(fields[14]) else { return nil }
        var rss = 0, hwm = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if line.hasPrefix("VmRSS:"), parts.count >= 2 { rss = (Int(parts[1]) ?? 0) * 1024 }
                if line.hasPrefix("VmHWM:"), parts.count >= 2 { hwm = (Int(parts[1]) ?? 0) * 1024 }
            }
        }
        return ProcessUsage(cpuSeconds: (ut + st + cut + cst) / ticks, rssBytes: rss, peakRSSBytes: hwm)
    }

    /// Every descendant of `pid` (Postfix's master forks smtpd, cleanup, qmgr, smtp …).
    static func descendants(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var parent: [Int32: Int32] = [:]
        for e in entries {
            guard let p = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let pp = Int32(fields[1]) { parent[p] = pp }
        }
        var out: [Int32] = []
        var frontier = [pid]
        while let p = frontier.popLast() {
            for (child, pp) in parent where pp == p { out.append(child); frontier.append(child) }
        }
        return out
    }
}

/// Progress of a long scenario on a terminal (elapsed, rates so far), one line
/// rewritten in place; silent when stderr is not a terminal or under CI, so logs
/// and CI output stay clean (issue 17).
enum BenchProgress {
    static let enabled: Bool = isatty(STDERR_FILENO) == 1 && getenv("CI") == nil && getenv("PEREGRINE_BENCH_QUIET") == nil
    nonisolated(unsafe) private static var lastLength = 0

    static func update(_ line: String) {
        guard enabled else { return }
        let pad = max(0, lastLength - line.count)
        fputs("\r" + line + String(repeating: " ", count: pad), stderr)
        lastLength = line.count
    }

    nonisolated(unsafe) private static var lastUpdate = Date.distantPast

    /// `update`, at most every two seconds (for loops that poll faster).
    static func every2s(_ line: @autoclosure () -> String) {
        guard enabled, Date().timeIntervalSince(lastUpdate) >= 2 else { return }
        lastUpdate = Date()
        update(line())
    }

    /// Ends the progress line so the next output starts on its own line.
    static func finish() {
        guard enabled, lastLength > 0 else { return }
        fputs("\n", stderr)
        lastLength = 0
    }
}
