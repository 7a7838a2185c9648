#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO

// peregrine-bench sink: the accept-all peregrine-sink against Postfix's own
// smtp-sink, both fed by Postfix's smtp-source -d (connection reuse) with 4 KB
// messages, interleaved round by round so that machine noise hits both alike.
// The sink must never be the bottleneck of a benchmark: its median rate has to
// be at least smtp-sink's.

private let sinkBenchUsage = """
usage: peregrine-bench sink [--messages N] [--sessions S] [--size BYTES] [--rounds R]
                            [--backends io_uring,epoll,dispatch] [--threads 1,2]
                            [--sink PATH] [--output FILE]
  --messages N   messages per run (default 50000)
  --sessions S   smtp-source concurrent sessions (default 20)
  --size BYTES   message size (default 4096)
  --rounds R     rounds; each round runs every contestant once (default 3)
  --backends L   peregrine-sink backends to run (default io_uring,epoll,dispatch)
  --threads L    peregrine-sink --threads values to run (default 1,2)
  --sink PATH    the peregrine-sink executable (default: next to peregrine-bench)
  --output FILE  JSON path (default results/sink-<YYYY-MM-DD>.json)
"""

private struct SinkBenchRun {
    var server: String
    var backend: String?
    var threads: Int?
    var round: Int
    var seconds: Double
    var messages: Int
    var accepted: Int?
    var status: String

    var rate: Double { seconds > 0 ? Double(messages) / seconds : 0 }
    var label: String {
        guard let b = backend else { return server }
        return "\(server)/\(b)" + (threads.map { "/t\($0)" } ?? "")
    }

    var json: [String: Any] {
        var o: [String: Any] = ["server": server, "round": round, "seconds": (seconds * 1000).rounded() / 1000,
                                "messages": messages, "messages_per_second": rate.rounded(), "status": status]
        if let b = backend { o["backend"] = b }
        if let t = threads { o["threads"] = t }
        if let a = accepted { o["accepted"] = a }
        return o
    }
}

/// A port for one server of the run on the bench's own loopback address
/// (BenchNet.runAddress): nothing else binds there, so it is free without
/// a bind-close-hand-over race.
private func sinkBenchFreePort() -> UInt16? { BenchNet.ports().sink }

/// Waits until something accepts on the run address's port (bounded).
private func sinkBenchWaitForListener(_ port: UInt16, seconds: Double = 20) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = inet_addr(BenchNet.runAddress)
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r == 0 {
            // Say goodbye politely so the server does not count a broken session.
            var buf = [UInt8](repeating: 0, count: 512)
            _ = recv(fd, &buf, buf.count, 0)
            _ = "QUIT\r\n".withCString { send(fd, $0, 6, Int32(MSG_NOSIGNAL)) }
            _ = recv(fd, &buf, buf.count, 0)
            close(fd)
            return true
        }
        close(fd)
        usleep(50_000)
    }
    return false
}

/// Starts a server that dies with the bench (BenchChildren).
private func sinkBenchStart(_ p: Process) -> Bool {
    BenchChildren.prepare(p)
    guard (try? p.run()) != nil else { return false }
    BenchChildren.register(p)
    return true
}

private func sinkBenchStop(_ p: Process) {
    if p.isRunning { kill(p.processIdentifier, SIGTERM) }
    let deadline = Date().addingTimeInterval(20)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
}

/// Runs smtp-source against the run address's port; returns wall seconds, or nil on failure.
private func sinkBenchSource(port: UInt16, messages: Int, sessions: Int, size: Int) -> (Double, String)? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/sbin/smtp-source")
    p.arguments = ["-d", "-s", String(sessions), "-l", String(size), "-m", String(messages),
                   "-f", "bench@source.test", "-t", "rcpt@sink.test", "\(BenchNet.runAddress):\(port)"]
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    let start = Date()
    BenchChildren.prepare(p)
    do { try p.run() } catch { return nil }
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(start)
    let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return (seconds, p.terminationStatus == 0 ? "ok" : "smtp-source exit \(p.terminationStatus): \(e.prefix(200))")
}

private func sinkBenchMedian(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func runSinkBench(arguments: [String]) -> Int32 {
    var messages = 50_000, sessions = 20, size = 4096, rounds = 3
    var threadCounts = [1, 2]
    var backends = ["io_uring", "epoll", "dispatch"]
    var output: String? = nil
    var sinkPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("peregrine-sink").path
    var i = 0
    func intArg(_ name: String) -> Int? {
        guard i + 1 < arguments.count, let v = Int(arguments[i + 1]), v > 0 else {
            fputs("peregrine-bench sink: \(name) needs a positive number\n", stderr); return nil
        }
        i += 1
        return v
    }
    while i < arguments.count {
        switch arguments[i] {
        case "--messages": guard let v = intArg("--messages") else { return 2 }; messages = v
        case "--sessions": guard let v = intArg("--sessions") else { return 2 }; sessions = v
        case "--size": guard let v = intArg("--size") else { return 2 }; size = v
        case "--rounds": guard let v = intArg("--rounds") else { return 2 }; rounds = v
        case "--threads":
            guard i + 1 < arguments.count else { fputs("--threads needs a list such as 1,2\n", stderr); return 2 }
            let list = arguments[i + 1].split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
            guard !list.isEmpty else { fputs("--threads needs a list such as 1,2\n", stderr); return 2 }
            threadCounts = list; i += 1
        case "--backends":
            guard i + 1 < arguments.count else { fputs("--backends needs a list\n", stderr); return 2 }
            backends = arguments[i + 1].split(separator: ",").map(String.init); i += 1
        case "--sink":
            guard i + 1 < arguments.count else { fputs("--sink needs a path\n", stderr); return 2 }
            sinkPath = arguments[i + 1]; i += 1
        case "--output":
            guard i + 1 < arguments.count else { fputs("--output needs a path\n", stderr); return 2 }
            output = arguments[i + 1]; i += 1
        case "-h", "--help": print(sinkBenchUsage); return 0
        default:
            fputs("peregrine-bench sink: unknown option '\(arguments[i])'\n\(sinkBenchUsage)\n", stderr); return 2
        }
        i += 1
    }
    for tool in ["/usr/sbin/smtp-sink", "/usr/sbin/smtp-source", sinkPath] where !FileManager.default.isExecutableFile(atPath: tool) {
        fputs("peregrine-bench sink: \(tool) not found (Postfix's smtp-sink/smtp-source are in the postfix package; build peregrine-sink -c release)\n", stderr)
        return 1
    }
    signal(SIGPIPE, SIG_IGN)
    let loadStart = BenchEnvironment.loadAverage()
    var runs: [SinkBenchRun] = []

    for round in 1...rounds {
        // Postfix smtp-sink (it refuses to keep root privileges: -u nobody).
        if let port = sinkBenchFreePort() {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/smtp-sink")
            p.arguments = (getuid() == 0 ? ["-u", "nobody"] : []) + ["\(BenchNet.runAddress):\(port)", "1024"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            var run = SinkBenchRun(server: "smtp-sink", backend: nil, threads: nil, round: round, seconds: 0, messages: messages, accepted: nil, status: "did not start")
            if sinkBenchStart(p), sinkBenchWaitForListener(port), let (s, status) = sinkBenchSource(port: port, messages: messages, sessions: sessions, size: size) {
                run.seconds = s; run.status = status
            }
            sinkBenchStop(p)
            print(String(format: "round %d  %-26@ %8.0f msg/s  (%@)", round, run.label, run.rate, run.status))
            runs.append(run)
        }
        for threads in threadCounts {
        for backend in backends {
            guard let port = sinkBenchFreePort() else { continue }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: sinkPath)
            p.arguments = ["--accept-all", "--listen", "\(BenchNet.runAddress):\(port)", "--backend", backend,
                           "--threads", String(threads), "--quiet"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            var run = SinkBenchRun(server: "peregrine-sink", backend: backend, threads: threads, round: round, seconds: 0, messages: messages, accepted: nil, status: "did not start")
            if sinkBenchStart(p), sinkBenchWaitForListener(port), let (s, status) = sinkBenchSource(port: port, messages: messages, sessions: sessions, size: size) {
                run.seconds = s; run.status = status
            }
            sinkBenchStop(p)
            // The sink prints its counters on exit: check it accepted every message.
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            if let start = text.firstIndex(of: "{"),
               let json = try? JSONSerialization.jsonObject(with: Data(text[start...].utf8)) as? [String: Any],
               let totals = json["totals"] as? [String: Any], let accepted = totals["messages_accepted"] as? Int {
                run.accepted = accepted
                if accepted != messages && run.status == "ok" { run.status = "accepted \(accepted) of \(messages)" }
            }
            print(String(format: "round %d  %-26@ %8.0f msg/s  (%@)", round, run.label, run.rate, run.status))
            runs.append(run)
        }
        }
    }

    var medians: [String: Double] = [:]
    for label in Set(runs.map(\.label)) {
        medians[label] = sinkBenchMedian(runs.filter { $0.label == label && $0.status == "ok" }.map(\.rate)).rounded()
    }
    let reference = medians["smtp-sink"] ?? 0
    var verdicts: [String: Any] = [:]
    for t in threadCounts {
      for b in backends {
        let m = medians["peregrine-sink/\(b)/t\(t)"] ?? 0
        verdicts["\(b)/t\(t)"] = ["median_messages_per_second": m,
                       "ratio_to_smtp_sink": reference > 0 ? (m / reference * 100).rounded() / 100 : 0,
                       "at_least_smtp_sink": m >= reference && m > 0]
      }
    }
    let best = medians.filter { $0.key.hasPrefix("peregrine-sink/") }.map(\.value).max() ?? 0
    let date = BenchEnvironment.today()
    let kernel = BenchEnvironment.kernelRelease()
    let result: [String: Any] = [
        "scenario": "sink-vs-smtp-sink",
        "date": ISO8601DateFormatter().string(from: Date()),
        "machine": ["cpus": ProcessInfo.processInfo.activeProcessorCount, "kernel": kernel,
                    "loadavg_start": loadStart, "loadavg_end": BenchEnvironment.loadAverage()],
        "parameters": ["messages": messages, "sessions": sessions, "size": size, "rounds": rounds,
                       "threads": threadCounts, "feeder": "smtp-source -d -s \(sessions) -l \(size) -m \(messages)"],
        "runs": runs.map(\.json),
        "median_messages_per_second": medians,
        "peregrine_sink": verdicts,
        "peregrine_sink_best_at_least_smtp_sink": best >= reference && best > 0,
    ]
    let path = output ?? "results/sink-\(date).json"
    do {
        let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path))
    } catch {
        fputs("peregrine-bench sink: cannot write \(path): \(error)\n", stderr)
        return 1
    }
    print("medians: " + medians.sorted { $0.key < $1.key }.map { "\($0.key) \(Int($0.value))/s" }.joined(separator: ", "))
    print("wrote \(path)")
    return runs.allSatisfy { $0.status == "ok" } ? 0 : 1
}
