import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineHTTP

/// The standard `process_*` metrics (the names Prometheus client libraries
/// use, so existing dashboards and alerts work): CPU, memory, descriptors,
/// start time, read from /proc/self at scrape time.
enum ProcessMetrics {
    static func append(to p: inout PrometheusText) {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            // After the command: state(0) … utime(11) stime(12) … starttime(19) vsize(20) rss(21).
            let f = stat[stat.index(after: close)...].split(separator: " ")
            if f.count > 21, let ut = Double(f[11]), let st = Double(f[12]), let start = Double(f[19]),
               let vsize = Double(f[20]), let rss = Double(f[21]) {
                p.counter("process_cpu_seconds_total", help: "User and system CPU time spent in seconds", value: (ut + st) / ticks)
                p.gauge("process_resident_memory_bytes", help: "Resident memory size in bytes", value: rss * page)
                p.gauge("process_virtual_memory_bytes", help: "Virtual memory size in bytes", value: vsize)
                if let boot = bootTime() {
                    p.gauge("process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds",
                            value: boot + start / ticks)
                }
            }
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            p.gauge("process_open_fds", help: "Number of open file descriptors", value: fds.count)
        }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            p.gauge("process_max_fds", help: "Maximum number of open file descriptors", value: Double(limit.rlim_cur))
        }
    }

    /// /proc/stat's btime: the boot time the process start (in ticks since boot) counts from.
    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") { return Double(line.dropFirst(6)) }
        return nil
    }
}
