#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
@testable import PeregrineSink
import PeregrineAccounting

// Helpers for the daemon end-to-end tests: the real `peregrine` executable
// against the real `peregrine-sink`, on 127.0.0.0/8 only, every process
// stopped (SIGTERM, then SIGKILL) and every temp dir removed.

enum E2E {
    /// A built executable next to the test bundle (or in .build/debug).
    static func executable(_ name: String) -> String {
        let arg0 = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = arg0.deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) && !candidate.hasSuffix(".xctest") { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.appendingPathComponent(".build/debug/\(name)").path
    }

    /// Whether this process may bind port 25 (root, or an unprivileged port
    /// range that starts at or below 25): the daemon delivers to MX hosts on
    /// port 25, like any MTA, so the receiving sink must listen there. The tests
    /// that need it carry `.enabled(if: E2E.mayBindPort25, …)`: skipped, with
    /// the reason, where it cannot.
    static let mayBindPort25: Bool = {
        let start = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 1024
        return getuid() == 0 || start <= 25
    }()

    /// Polls `condition` until it holds or `timeout` seconds pass (a deadline
    /// against hanging, never a timing assertion).
    @discardableResult
    static func waitUntil(_ timeout: Double, every interval: Double = 0.1, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try condition() { return true }
            if Date() >= deadline { return false }
            usleep(UInt32(interval * 1_000_000))
        }
    }

    /// A loopback address unique to a scenario and backend (127.P.SCENARIO.BACKEND,
    /// P this test process's own: PrivateLoopback), so that scenarios and backends
    /// can run side by side, and beside another test run on the same machine.
    /// `file` is the test file that chose the number (ScenarioNumbers).
    static func ip(_ scenario: Int, _ kind: BackendKind, host: Int = 0, file: String = #fileID) -> String {
        let b = (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1
        return PrivateLoopback.address(scenario, b * 10 + host, file: file)
    }

    /// Plain HTTP GET on loopback (bounded); returns the body.
    static func httpGet(_ address: String, _ path: String) throws -> Data {
        try http("GET", address, path)
    }

    /// One plain HTTP request without a body on loopback (bounded); returns the body.
    static func http(_ method: String, _ address: String, _ path: String) throws -> Data {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw SinkTestError("bad address \(address)")
        }
        let client = try SinkTestClient(String(address[..<colon]), port)
        // Host names the address: the management API refuses other hosts (DNS rebinding).
        let length = method == "POST" ? "Content-Length: 0\r\n" : ""
        try client.send("\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\n\(length)Connection: close\r\n\r\n")
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(client.fd, &buf, buf.count, 0)
            if n < 0 && errno == EINTR { continue }  // another test's child exited (SIGCHLD)
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        let text = Data(bytes)
        guard let sep = text.range(of: Data("\r\n\r\n".utf8)) else { throw SinkTestError("no HTTP response from \(address)\(path)") }
        return text.subdata(in: sep.upperBound..<text.count)
    }

    static func json(_ data: Data) throws -> [String: Any] {
        guard let o = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw SinkTestError("not a JSON object") }
        return o
    }

    /// Runs an executable to completion (bounded); stdout and stderr go to files.
    static func run(_ executable: String, _ args: [String], timeout: Double = 60) -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let base = NSTemporaryDirectory() + "e2e-run-\(getpid())-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: base + ".out", contents: nil)
        FileManager.default.createFile(atPath: base + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        guard let out = FileHandle(forWritingAtPath: base + ".out"), let err = FileHandle(forWritingAtPath: base + ".err") else {
            return (-1, "", "cannot create output files")
        }
        p.standardOutput = out
        p.standardError = err
        do { try ChildProcess.run(p) } catch { return (-1, "", "\(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            let d2 = Date().addingTimeInterval(5)
            while p.isRunning && Date() < d2 { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        try? out.close(); try? err.close()
        let o = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let e = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        return (p.terminationStatus, o, e)
    }
}

/// A temporary directory, removed when the object goes.
final class TestDirectory {
    let path: String
    init(_ tag: String) throws {
        path = NSTemporaryDirectory() + "peregrine-e2e-\(tag)-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    func write(_ name: String, _ text: String) throws -> String {
        let p = file(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A sink profile for one scenario: explicit CI-sized times (time-scale 1).
func sinkProfile(_ name: String, domains: String, mx: [String], _ rules: String = "") -> String {
    """
    <isp \(name)>
        domains \(domains)
        mx \(mx.joined(separator: " "))
        port 2525
        hostname mx.\(name).sink
    \(rules)
    </isp>

    """
}

/// Starts a sink from profile text written into `dir` (kernel-picked port unless given).
/// Its stats and DNS ports are kernel-picked on `serviceIP` (the scenario's
/// own address), so they never take a port on 127.0.0.1 another test wants.
func startSink(_ dir: TestDirectory, serviceIP: String, _ profiles: String, port: UInt16 = 0, dns: Bool = false,
               ids: String? = nil, tag: String = "sink") throws -> SinkProcess {
    let path = try dir.write("\(tag).conf", "time-scale 1\n\n" + profiles)
    var args = ["--profile", path, "--port", "\(port)", "--stats-port", "\(serviceIP):0", "--backend", "epoll"]
    if dns { args += ["--dns", "\(serviceIP):0"] }
    if let ids { args += ["--record-ids", ids] }
    return try SinkProcess(args)
}

extension SinkProcess {
    /// GET /stats as JSON.
    func stats() throws -> [String: Any] {
        guard let a = statsAddress else { throw SinkTestError("sink has no stats port") }
        return try E2E.json(try E2E.httpGet(a, "/stats"))
    }

    /// The counters one provider keeps for one sending IP (empty when it never connected).
    func ipStats(_ provider: String, _ ip: String) throws -> [String: Any] {
        let providers = try stats()["providers"] as? [String: Any]
        let p = providers?[provider] as? [String: Any]
        return (p?["ips"] as? [String: Any])?[ip] as? [String: Any] ?? [:]
    }

    /// POST /penalty-box/lift: ends every penalty box now; returns how many were on.
    @discardableResult
    func liftPenaltyBoxes() throws -> Int {
        guard let a = statsAddress else { throw SinkTestError("sink has no stats port") }
        guard let n = try E2E.json(try E2E.http("POST", a, "/penalty-box/lift"))["lifted"] as? Int else {
            throw SinkTestError("no count in the sink's answer to POST /penalty-box/lift")
        }
        return n
    }

    func providerStats(_ provider: String) throws -> [String: Any] {
        let providers = try stats()["providers"] as? [String: Any]
        return providers?[provider] as? [String: Any] ?? [:]
    }
}

/// The daemon configuration every scenario starts from: listener and
/// management on a loopback address of the scenario's own, two VMTAs and a pool,
/// relaying for 127.0.0.0/8, all accounting record types.
func daemonConfig(_ dir: TestDirectory, listen ip: String, dns: String? = nil, defaultVMTA: String = "vmta1",
                  _ rest: String) -> String {
    """
    smtp-listener \(ip):2525
    http-mgmt-port \(ip):8125
    spool \(dir.file("spool"))
    \(dns.map { "dns-server \($0)" } ?? "")
    <source 127.0.0.0/8>
        always-allow-relaying yes
        process-x-virtual-mta yes
        default-virtual-mta \(defaultVMTA)
    </source>
    <virtual-mta vmta1>
        smtp-source-host 127.0.0.10 vmta1.test
    </virtual-mta>
    <virtual-mta vmta2>
        smtp-source-host 127.0.0.11 vmta2.test
    </virtual-mta>
    <virtual-mta-pool pool1>
        virtual-mta vmta1
        virtual-mta vmta2
    </virtual-mta-pool>
    <acct-file \(dir.file("acct.csv"))>
        records r,d,b,t,tq
    </acct-file>
    \(rest)

    """
}

/// Runs `peregrine run` for a test: waits (bounded) for its "running" line,
/// reads the bound listener and management addresses from it, and is always
/// stopped (SIGTERM then SIGKILL).
final class DaemonProcess {
    let process = Process()
    let logPath: String
    let configPath: String
    private(set) var listenIP = ""
    private(set) var listenPort: UInt16 = 0
    private(set) var management = ""
    private var finished = false

    /// `launcher`: a command the daemon runs under (e.g. `prlimit --nofile=64: --`); empty: none.
    init(configPath: String, backend: BackendKind, threads: Int = 2, logPath: String, launcher: [String] = []) throws {
        self.configPath = configPath
        self.logPath = logPath
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: logPath) else { throw SinkTestError("cannot write \(logPath)") }
        // A restart appends to the same log: only what this process writes counts
        // (the previous run's "running" line must not pass for this one's).
        let startOffset = Int(handle.seekToEndOfFile())
        let run = ["run", "--config", configPath, "--backend", backend.rawValue, "--threads", "\(threads)"]
        if let first = launcher.first {
            process.executableURL = URL(fileURLWithPath: first)
            process.arguments = Array(launcher.dropFirst()) + [E2E.executable("peregrine")] + run
        } else {
            process.executableURL = URL(fileURLWithPath: E2E.executable("peregrine"))
            process.arguments = run
        }
        process.standardOutput = handle
        process.standardError = handle
        try ChildProcess.run(process)
        try? handle.close()
        var line: Substring?
        E2E.waitUntil(30, every: 0.05) {
            let fresh = (FileManager.default.contents(atPath: logPath) ?? Data()).dropFirst(startOffset)
            line = String(decoding: fresh, as: UTF8.self).split(separator: "\n").last { $0.contains("peregrine: running:") }
            return line != nil || !process.isRunning
        }
        guard let line, let range = line.range(of: "listening on ") else {
            terminate()
            throw SinkTestError("daemon did not start: \(self.log)")
        }
        let rest = line[range.upperBound...]
        let listen = rest.split(separator: ",").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
        if let c = listen.lastIndex(of: ":") {
            listenIP = String(listen[..<c])
            listenPort = UInt16(listen[listen.index(after: c)...]) ?? 0
        }
        if let m = rest.range(of: "management on ") {
            management = String(rest[m.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard listenPort != 0, !management.isEmpty else {
            terminate()
            throw SinkTestError("daemon running line without addresses: \(line)")
        }
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var managementPort: String { String(management.split(separator: ":").last ?? "") }
    var managementHost: String { String(management.split(separator: ":").first ?? "127.0.0.1") }

    /// The management token file the daemon created (`http-mgmt-token-file`,
    /// else `SPOOL/mgmt-token`), read from the config as it was at start.
    private(set) lazy var tokenFile: String = {
        let lines = ((try? String(contentsOfFile: configPath, encoding: .utf8)) ?? "").split(separator: "\n")
        func value(_ directive: String) -> String? {
            lines.lazy.map { $0.trimmingCharacters(in: .whitespaces) }
                .first { $0.hasPrefix(directive + " ") }
                .map { String($0.dropFirst(directive.count + 1)).trimmingCharacters(in: .whitespaces) }
        }
        return value("http-mgmt-token-file") ?? ((value("spool") ?? "/var/spool/peregrine") + "/mgmt-token")
    }()

    /// A client connected to the daemon's SMTP listener, past EHLO.
    func client() throws -> DaemonInjector { try DaemonInjector(listenIP, listenPort) }

    /// `peregrine ctl --port P ARGS… --json` → the JSON it prints.
    func ctl(_ args: [String]) throws -> [String: Any] {
        let r = E2E.run(E2E.executable("peregrine"), ["ctl", "--host", managementHost, "--port", managementPort,
                                                       "--token-file", tokenFile, "--json"] + args, timeout: 20)
        guard r.status == 0 else { throw SinkTestError("ctl \(args) failed (\(r.status)): \(r.stderr)") }
        return try E2E.json(Data(r.stdout.utf8))
    }

    /// The queues as `ctl show queues --json` reports them, by name.
    func queues() throws -> [String: [String: Any]] {
        let list = try ctl(["show", "queues"])["queues"] as? [[String: Any]] ?? []
        var out: [String: [String: Any]] = [:]
        for q in list { if let name = q["queue"] as? String { out[name] = q } }
        return out
    }

    /// SIGKILL: a crash.
    func crash() {
        guard !finished else { return }
        finished = true
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM, wait (bounded), SIGKILL if needed.
    func terminate() {
        guard !finished else { return }
        finished = true
        stopProcess(process)
    }

    deinit { terminate() }
}

/// Injects messages into the daemon over SMTP, one transaction at a time,
/// several recipients each, optional extra headers and a loadgen-style id.
final class DaemonInjector {
    let client: SinkTestClient
    init(_ ip: String, _ port: UInt16) throws {
        client = try SinkTestClient(ip, port)
        guard try client.start()?.code == 220 else { throw SinkTestError("no 220 greeting from the daemon") }
    }

    /// Returns nil when the message was accepted (250 after DATA), else what went wrong.
    func send(to recipients: [String], id: String, from: String = "sender@peregrine.test",
              headers: [String] = []) throws -> String? {
        guard let m = try client.command("MAIL FROM:<\(from)>"), m.code == 250 else { return "MAIL refused" }
        for r in recipients {
            guard let reply = try client.command("RCPT TO:<\(r)>"), reply.code == 250 else {
                _ = try? client.command("RSET")
                return "RCPT \(r) refused"
            }
        }
        guard let d = try client.command("DATA"), d.code == 354 else { return "DATA refused" }
        var body = ""
        for h in headers { body += h + "\r\n" }
        body += "X-Loadgen-Id: \(id)\r\nFrom: <\(from)>\r\nSubject: e2e \(id)\r\n\r\nHello from the end-to-end test.\r\n.\r\n"
        try client.send(body)
        guard let e = try client.reply() else { return "closed after DATA" }
        return e.code == 250 ? nil : "DATA: \(e)"
    }

    func quit() { _ = try? client.command("QUIT") }
}

/// The part of a cluster node's config every cluster test shares: listener and
/// management port on `listen`, the node's own spool and accounting file, the
/// Redis it coordinates through, and vmta1 sending from `source` as `sourceHost`.
/// The test appends its domains (and anything else) after it.
func clusterNodeConfig(_ dir: TestDirectory, name: String, listen: String, source: String, sourceHost: String,
                       redis: String, nodeCount: Int, records: String = "d,b,t", leaseTTL: String? = nil) -> String {
    """
    smtp-listener \(listen):2525
    http-mgmt-port \(listen):8125
    spool \(dir.file("spool-\(name)"))
    cluster-redis \(redis):6379
    cluster-node-name \(name)
    cluster-node-count \(nodeCount)
    \(leaseTTL.map { "cluster-lease-ttl \($0)" } ?? "")
    <source 127.0.0.0/8>
        always-allow-relaying yes
        process-x-virtual-mta yes
        default-virtual-mta vmta1
    </source>
    <virtual-mta vmta1>
        smtp-source-host \(source) \(sourceHost)
    </virtual-mta>
    <acct-file \(dir.file("acct-\(name).csv"))>
        records \(records)
    </acct-file>

    """
}

/// Trips a sink's per-IP message rate from `source` (the VMTA's address) by
/// pipelining MAIL/RSET pairs, so that its penalty box is on before the
/// daemon sends anything; returns the refusal it got (nil if none).
func tripSinkRate(_ ip: String, _ port: UInt16, from source: String, pairs: Int = 12) throws -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SinkTestError("socket failed") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    func sockaddr4(_ ip: String, _ port: UInt16) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &sa.sin_addr)
        return sa
    }
    var local = sockaddr4(source, 0), remote = sockaddr4(ip, port)
    let size = socklen_t(MemoryLayout<sockaddr_in>.size)
    guard withUnsafePointer(to: &local, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }) == 0 else {
        throw SinkTestError("bind \(source) failed: errno \(errno)")
    }
    var r: Int32
    repeat {
        r = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } }
    } while r != 0 && errno == EINTR
    guard r == 0 else { throw SinkTestError("connect \(ip):\(port) failed: errno \(errno)") }
    let script = "EHLO trip.test\r\n" + String(repeating: "MAIL FROM:<trip@peregrine.test>\r\nRSET\r\n", count: pairs)
    let bytes = Array(script.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        off += n
    }
    var text = ""
    var buf = [UInt8](repeating: 0, count: 4096)
    // Lines end in CRLF, one Character in Swift: match on "\r\n", not "\n".
    while !text.contains("\r\n421 ") && !text.hasPrefix("421 ") {
        let n = recv(fd, &buf, buf.count, 0)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        text += String(decoding: buf[0..<n], as: UTF8.self)
    }
    return text.components(separatedBy: "\r\n").first { $0.hasPrefix("421") }
}

/// The accounting file as records (empty until the first flush). A file that
/// exists but cannot be read or parsed is a test failure (an Issue), never an
/// empty list that a "nothing was delivered" check would then accept.
func accounting(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) -> [AccountingRecord] {
    guard FileManager.default.fileExists(atPath: path) else { return [] }
    do { return try AccountingCSVReader.readRecords(path: path) } catch {
        Issue.record("cannot read the accounting file \(path): \(error)", sourceLocation: sourceLocation)
        return []
    }
}

extension Array where Element == AccountingRecord {
    func of(_ type: AccountingRecordType) -> [AccountingRecord] { filter { $0.type == type } }
    var finals: [AccountingRecord] { filter { $0.type == .delivered || $0.type == .bounced } }
}

/// Sorted ids from a sink --record-ids file ("ID ARRIVAL-NS" lines).
func recordedIds(_ path: String) -> [(id: String, at: Int64)] {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { line in
        let w = line.split(separator: " ")
        guard w.count == 2, let t = Int64(w[1]) else { return nil }
        return (String(w[0]), t)
    }
}

/// Names `domain/vmta` in accounting and /queues.
func queueName(_ domain: String, _ vmta: String = "vmta1") -> String { "\(domain)/\(vmta)" }
