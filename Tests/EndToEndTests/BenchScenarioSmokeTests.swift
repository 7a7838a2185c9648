#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// Short versions of the `crash` and `backlog` benchmarks and of `summarize`
/// (issue 7). They assert only that nothing accepted was lost and that the
/// summary is written — no timing figure is checked (those live in results/).
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct BenchScenarioSmokeTests {
    static var benchExecutable: String { E2E.executable("peregrine-bench") }

    /// Runs peregrine-bench with a deadline; returns exit status and both outputs.
    static func bench(_ arguments: [String], timeout: Double) throws -> (status: Int32, stdout: String, stderr: String) {
        try run(benchExecutable, arguments, timeout: timeout)
    }

    /// Runs a program with a deadline (`environment` nil: the test's own);
    /// returns its exit status and both outputs.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                    timeout: Double) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        // Output to files (no pipe to drain concurrently while the child runs).
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/out")
        p.standardError = FileHandle(forWritingAtPath: dir + "/err")
        p.standardInput = FileHandle.nullDevice
        try ChildProcess.run(p)
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning {
            Issue.record("\(executable) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
            // SIGTERM: the bench stops its children; SIGKILL after the grace (they then die by their death signal).
            stopProcess(p, grace: 30)
        }
        p.waitUntilExit()
        let stdout = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
        return (p.terminationStatus, stdout, stderr)
    }

    static func scratch() -> String {
        var chars = Array((NSTemporaryDirectory() + "bench-smoke-XXXXXX").utf8CString)
        return String(cString: mkdtemp(&chars)!)
    }

    /// The row of a printed table whose first column is `first`.
    static func row(_ stdout: String, _ first: String) -> [String]? {
        stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            .first { $0.first == first }
    }

    @Test func crashRoundLosesNothing() throws {
        let r = try Self.bench(["crash", "--backend", "epoll", "--rounds", "1", "--count", "400", "--seed", "3",
                                "--connections", "4", "--drain-timeout", "60", "--no-results"], timeout: 240)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stdout)\n\(r.stderr)")
        // backend round killed-at accepted delivered lost dup …
        guard let row = Self.row(r.stdout, "epoll"), row.count >= 7 else {
            Issue.record("no result row:\n\(r.stdout)\n\(r.stderr)")
            return
        }
        #expect(Int(row[3]) ?? 0 > 0, "nothing accepted: \(row)")
        #expect(row[5] == "0", "lost messages: \(row)")
    }

    /// The cluster scenario, small: three nodes, Redis, the sink, node 2
    /// SIGKILLed and restarted mid-run; nothing lost, the connection cap held.
    @Test func clusterRunWithANodeKilledLosesNothing() throws {
        guard RedisServerProcess.path != nil else {
            Issue.record("redis-server is not installed (scripts/setup installs it): cluster scenario not run")
            return
        }
        let dir = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Self.bench(["cluster", "--count", "600", "--connections", "2", "--cluster-connections", "6",
                                "--max-smtp-out", "4", "--cluster-rate", "400/s", "--kill", "node",
                                "--throughput-count", "300",   // the 1-vs-3-node phase, small (its default is 20,000)
                                "--drain-timeout", "120", "--output-dir", dir], timeout: 300)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stdout)\n\(r.stderr)")
        // backend kill accepted delivered lost dup peak cap busiest rate …
        guard let row = Self.row(r.stdout, "epoll"), row.count >= 10 else {
            Issue.record("no result row:\n\(r.stdout)\n\(r.stderr)")
            return
        }
        #expect(Int(row[2]) ?? 0 > 0, "nothing accepted: \(row)")
        #expect(row[4] == "0", "lost messages: \(row)")
        #expect(Int(row[6]) ?? 99 <= 6, "peak connections past the cluster cap: \(row)")
    }

    @Test func backlogDrainsEverything() throws {
        let dir = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Self.bench(["backlog", "--backend", "epoll", "--count", "300", "--connections", "4",
                                "--drain-timeout", "60", "--output-dir", dir], timeout: 240)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stdout)\n\(r.stderr)")
        // backend accepted injected/s RSS peak drain drained/s delivered lost dup
        guard let row = Self.row(r.stdout, "epoll"), row.count >= 10 else {
            Issue.record("no result row:\n\(r.stdout)\n\(r.stderr)")
            return
        }
        #expect(Int(row[1]) ?? 0 > 0, "nothing accepted: \(row)")
        #expect(row[8] == "0", "lost messages: \(row)")
        #expect(FileManager.default.fileExists(atPath: dir + "/README.md"), "the run did not regenerate the summary")
        // stderr is a file here, as in CI: no progress line (issue 17).
        #expect(!r.stderr.contains("backlog drain:"), "progress written to a file:\n\(r.stderr)")
    }

    /// On a terminal the same scenario shows its progress (elapsed, delivered
    /// so far, rate), one line rewritten with CR (issue 17). util-linux's
    /// `script` (Debian bsdutils, essential) gives the bench a pseudo-terminal.
    @Test func progressShowsOnATerminal() throws {
        let script = try #require(findTool("script"), "util-linux script not found (Debian bsdutils)")
        let dir = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let command = [Self.benchExecutable, "backlog", "--backend", "epoll", "--count", "300", "--connections", "4",
                       "--drain-timeout", "60", "--output-dir", dir].map { "'\($0)'" }.joined(separator: " ")
        var environment = ProcessInfo.processInfo.environment
        environment["CI"] = nil
        environment["PEREGRINE_BENCH_QUIET"] = nil
        // script copies the terminal's output (the bench's stdout and stderr) to its stdout.
        let r = try Self.run(script, ["-qefc", command, "/dev/null"], environment: environment, timeout: 240)
        let tty = r.stdout
        #expect(r.status == 0, "exit \(r.status)\n\(tty)\n\(r.stderr)")
        #expect(tty.contains("\r   backlog drain: "), "no progress line on the terminal:\n\(tty)")
        #expect(tty.range(of: #"backlog drain: \d+ s, \d+/\d+ at the sink \(\d+/s\)"#, options: .regularExpression) != nil,
                "the progress line lacks elapsed time, counts or rate:\n\(tty)")
    }

    @Test func summarizeWritesTheLatestRunPerTarget() throws {
        let dir = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func write(_ name: String, _ json: String) { _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(json.utf8)) }
        write("relay-epoll-2026-01-01.json", #"{"scenario":"relay","target":"epoll","date":"2026-01-01","deliveredPerSecond":100.0,"lost":0}"#)
        write("relay-epoll-2026-01-02.json", #"{"scenario":"relay","target":"epoll","date":"2026-01-02","deliveredPerSecond":222.0,"lost":0}"#)
        write("crash-epoll-2026-01-02.json", #"{"scenario":"crash","target":"epoll","date":"2026-01-02","summary":[["lost","0"]]}"#)
        write("broken.json", "{")
        let r = try Self.bench(["summarize", "--results", dir], timeout: 60)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stderr)")
        let md = (try? String(contentsOfFile: dir + "/README.md", encoding: .utf8)) ?? ""
        #expect(md.contains("## relay") && md.contains("## crash"), "\(md)")
        #expect(md.contains("| 222 |") && !md.contains("| 100 |"), "not the latest relay run:\n\(md)")
    }
}
