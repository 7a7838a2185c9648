import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// A child process of a benchmark run: output to a log file, stopped with
/// SIGTERM (then SIGKILL) so that nothing outlives the run.
final class BenchProcess {
    let name: String
    let process = Process()
    let logPath: String

    init(name: String, executable: String, arguments: [String], logPath: String) {
        self.name = name
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Starts it so that it dies with the bench (SIGKILL when the bench dies,
    /// the bench's SIGTERM handler stops it first).
    func start() throws {
        BenchChildren.prepare(process)
        try process.run()
        BenchChildren.register(self)
    }

    /// How the process ended ("exit status 0", "signal 11 (SIGSEGV)"), or nil while it runs.
    var exitDescription: String? {
        guard !process.isRunning else { return nil }
        let status = process.terminationStatus
        switch process.terminationReason {
        case .exit: return "exit status \(status)"
        case .uncaughtSignal:
            let name = strsignal(status).map { String(cString: $0) } ?? "?"
            return "signal \(status) (\(name))"
        @unknown default: return "status \(status)"
        }
    }

    /// Waits up to `timeout` seconds for the process to exit by itself.
    @discardableResult
    func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 10) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !wait(timeout: grace) {
            kill(pid, SIGKILL)
            wait(timeout: 5)
        }
    }

    var logTail: String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return "" }
        return text.split(separator: "\n").suffix(5).joined(separator: "\n")
    }
}

enum BenchNet {
    /// Waits until something accepts TCP connections on ip:port.
    static func waitForListener(ip: String, port: UInt16, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if canConnect(ip: ip, port: port) { return true }
            usleep(50_000)
        }
        return false
    }

    static func canConnect(ip: String, port: UInt16) -> Bool {
        guard let fd = connectedSocket(ip: ip, port: port) else { return false }
        close(fd)
        return true
    }

    /// A blocking TCP socket connected to ip:port (`configure` runs before
    /// the connect, e.g. for socket options); nil when it cannot connect.
    static func connectedSocket(ip: String, port: UInt16, configure: (Int32) -> Void = { _ in }) -> Int32? {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &addr.sin_addr)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        configure(fd)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); return nil }
        return fd
    }

    /// A loopback address of this bench process's own, 127.128-191.x.y made
    /// from the pid (pids are below 2^22), so that fixed ports on it are free
    /// by construction: no test's port-0 listener, no other bench run and no
    /// leftover daemon of another run can hold them. (Choosing a "free port"
    /// on 127.0.0.1 and handing it to a child raced every port-0 listener.)
    static let runAddress: String = {
        let p = Int(getpid()) & 0x3F_FFFF
        return "127.\(128 + (p >> 16)).\((p >> 8) & 0xFF).\(p & 0xFF)"
    }()

    /// The ports one run (one target, one scenario round) uses on its address.
    /// Each call gives a new block, so a run never rebinds a port its predecessor
    /// in the same bench process just closed.
    static func ports() -> BenchPorts {
        let block = UInt16(nextBlock.add(1, ordering: .relaxed).oldValue % 200)
        return BenchPorts(base: 20_000 + block * 10)
    }

    private static let nextBlock = Atomic<Int>(0)

    /// GET a small JSON document over HTTP/1.0 (the sink's /stats).
    static func getJSON(ip: String, port: UInt16, path: String) -> [String: Any]? {
        guard let body = getBody(ip: ip, port: port, path: path) else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    }

    /// GET a small text document over HTTP/1.0 (the daemon's /metrics); its body, or nil.
    static func getText(ip: String, port: UInt16, path: String) -> String? {
        getBody(ip: ip, port: port, path: path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The body of an HTTP/1.0 GET, read until the peer closes (5 s receive timeout).
    private static func getBody(ip: String, port: UInt16, path: String) -> ArraySlice<UInt8>? {
        guard let fd = connectedSocket(ip: ip, port: port, configure: { fd in
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }) else { return nil }
        defer { close(fd) }
        let req = Array("GET \(path) HTTP/1.0\r\nHost: \(ip)\r\nConnection: close\r\n\r\n".utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        guard let start = findBody(data) else { return nil }
        return data[start...]
    }

    private static func findBody(_ d: [UInt8]) -> Int? {
        guard d.count >= 4 else { return nil }
        for i in 0..<(d.count - 3) where d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 { return i + 4 }
        return nil
    }
}

/// Fixed ports of one run on `BenchNet.runAddress`.
struct BenchPorts {
    let base: UInt16
    var sink: UInt16 { base }
    var mta: UInt16 { base + 1 }
    var stats: UInt16 { base + 2 }
    var mgmt: UInt16 { base + 3 }
    var dns: UInt16 { base + 4 }
    /// The MTA's SMTP listener when `mta` is another of its listeners (http-relay's API).
    var mtaSMTP: UInt16 { base + 5 }
}

/// Every child the bench starts: killed by the kernel when the bench dies
/// (PR_SET_PDEATHSIG through setpriv, which execs in place so the pid is the
/// child's own), and stopped by the bench's SIGTERM/SIGINT handler, which also
/// runs the registered clean-ups (Postfix's master daemonizes out of reach of
/// the death signal). Spawned from the main thread only: the death signal
/// follows the thread that forked.
enum BenchChildren {
    private static let lock = Locked<Void>()
    /// What the termination handler stops: the bench's BenchProcesses and the
    /// plain Processes of the sink comparison (smtp-sink drops to nobody, which
    /// clears its death signal).
    nonisolated(unsafe) private static var children: [(isRunning: () -> Bool, stop: () -> Void)] = []
    nonisolated(unsafe) private static var cleanUps: [Int: () -> Void] = [:]
    nonisolated(unsafe) private static var nextCleanUp = 0
    nonisolated(unsafe) private static var signalSources: [DispatchSourceSignal] = []

    static let setpriv: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Rewrites `process` to start through `setpriv --pdeathsig KILL`.
    static func prepare(_ process: Process) {
        guard let setpriv, let exe = process.executableURL?.path else { return }
        process.executableURL = URL(fileURLWithPath: setpriv)
        process.arguments = ["--pdeathsig", "KILL", "--", exe] + (process.arguments ?? [])
    }

    static func register(_ child: BenchProcess) {
        lock.withLock {
            children.removeAll { !$0.isRunning() }
            children.append((isRunning: { child.isRunning }, stop: { child.stop(grace: 5) }))
        }
    }

    static func register(_ process: Process) {
        lock.withLock {
            children.removeAll { !$0.isRunning() }
            children.append((isRunning: { process.isRunning }, stop: {
                guard process.isRunning else { return }
                kill(process.processIdentifier, SIGTERM)
                let deadline = Date().addingTimeInterval(5)
                while process.isRunning && Date() < deadline { usleep(20_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }))
        }
    }

    /// Runs `body` if the bench is terminated before `removeCleanUp(token)`.
    static func addCleanUp(_ body: @escaping () -> Void) -> Int {
        lock.withLock {
            nextCleanUp += 1
            cleanUps[nextCleanUp] = body
            return nextCleanUp
        }
    }

    static func removeCleanUp(_ token: Int) {
        lock.withLock { cleanUps[token] = nil }
    }

    /// SIGTERM and SIGINT stop every child (SIGTERM, then SIGKILL), run the
    /// clean-ups and exit 128+signal: a timed-out smoke test that signals the
    /// bench leaves no daemon holding a port.
    static func installTerminationHandler() {
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                let (running, hooks) = lock.withLock { (children, Array(cleanUps.values)) }
                fputs("peregrine-bench: signal \(sig): stopping \(running.filter { $0.isRunning() }.count) child process(es)\n", stderr)
                for child in running.reversed() { child.stop() }
                for hook in hooks { hook() }
                _exit(128 + sig)
            }
            source.resume()
            signalSources.append(source)
        }
    }
}
