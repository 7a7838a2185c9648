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
                "memoryBytes": sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))]
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
