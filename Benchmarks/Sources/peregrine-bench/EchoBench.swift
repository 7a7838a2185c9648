#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO

// peregrine-bench echo: an SMTP-like request/response benchmark over each
// I/O backend in turn. For each backend, one server loop thread and one
// client loop thread (two loop instances of that backend) in this process;
// N client connections each send a 32-byte command and wait for the 40-byte
// reply before sending the next (no pipelining, like SMTP without
// PIPELINING). CPU is getrusage(RUSAGE_SELF): the whole process, i.e.
// server + client together.

private let echoUsage = """
usage: peregrine-bench echo [--connections N] [--duration SECONDS] [--requests N]
                            [--backends io_uring,epoll,dispatch] [--output FILE]
  --connections N     concurrent connections (default 64)
  --duration S        measured seconds per backend (default 5)
  --requests N        stop each backend after N requests instead (duration is then a cap)
  --backends LIST     comma-separated subset, in order (default: all three)
  --output FILE       JSON path (default results/echo-<YYYY-MM-DD>.json)
"""

private let requestSize = 32
private let replySize = 40
private let request: [UInt8] = Array("MAIL FROM:<bench@peregrine.t>\r\n".utf8).padded(to: requestSize)
private let reply: [UInt8] = Array("250 2.1.0 Ok: sender <bench> accepted\r\n".utf8).padded(to: replySize)

private extension Array where Element == UInt8 {
    func padded(to n: Int) -> [UInt8] {
        var a = Array(prefix(n))
        while a.count < n { a.insert(UInt8(ascii: " "), at: a.count - 2) }
        return a
    }
}

struct EchoFigures {
    var backend: String
    var status: String          // "ok" or why it was skipped / failed
    var connections = 0
    var requests = 0
    var seconds = 0.0
    var cpuUser = 0.0
    var cpuSystem = 0.0
    var requestsPerSecond: Double { seconds > 0 ? Double(requests) / seconds : 0 }
    var cpuPer100k: Double { requests > 0 ? (cpuUser + cpuSystem) * 100_000 / Double(requests) : 0 }
}

private func cpuTimes() -> (user: Double, system: Double) {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return (s(u.ru_utime), s(u.ru_stime))
}

/// Runs `body` on the loop and waits (bounded) for it to call back.
private final class Waiter<T>: @unchecked Sendable {
    private let lock = Locked<Void>()
    private var value: T?
    private let sem = DispatchSemaphore(value: 0)
    func put(_ v: T) {
        let first = lock.withLock { () -> Bool in
            let first = value == nil
            if first { value = v }
            return first
        }
        if first { sem.signal() }
    }
    func wait(_ seconds: Double) -> T? {
        guard sem.wait(timeout: .now() + seconds) == .success else { return nil }
        return lock.withLock { value }
    }
}

private struct Unsafe<T>: @unchecked Sendable { let v: T }

// MARK: Server

private final class EchoServer<L: EventLoop> {
    let loop: L
    var listener: Listener?
    var conns: [Int32: ServerConn<L>] = [:]
    let replies: UnsafeMutableRawBufferPointer  // 128 replies back to back, read-only
    static var maxBatch: Int { 128 }

    init(loop: L) {
        self.loop = loop
        replies = .allocate(byteCount: replySize * Self.maxBatch, alignment: 16)
        for i in 0..<Self.maxBatch { for j in 0..<replySize { replies[i * replySize + j] = reply[j] } }
    }

    func start(_ address: SocketAddress) throws(IOError) -> SocketAddress {
        let l = try loop.listen(on: address, options: ListenOptions(backlog: 4096)) { [unowned self] r in
            guard case .success(let c) = r else { return }
            let conn = ServerConn(server: self, socket: c.socket)
            conns[c.socket.fd] = conn
            conn.receiveNext()
        }
        listener = l
        return l.address
    }

    func shutdown() {
        if let l = listener { loop.closeListener(l); listener = nil }
        for c in conns.values { c.close() }
        conns.removeAll()
    }
}

private final class ServerConn<L: EventLoop> {
    let server: EchoServer<L>
    let socket: Socket
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    var partial = 0
    var owed = 0
    var closed = false
    var onReceive: ((Result<Int, IOError>) -> Void)?
    var onSent: ((Result<Void, IOError>) -> Void)?

    init(server: EchoServer<L>, socket: Socket) {
        self.server = server
        self.socket = socket
        // Stored once: no closure allocation per event. They hold self
        // strongly on purpose: the loop may still call them with .cancelled
        // after close (a small per-connection leak in a benchmark process).
        onReceive = { [self] r in
            guard case .success(let n) = r, n > 0 else { close(); return }
            partial += n
            owed += partial / requestSize
            partial %= requestSize
            if owed > 0 { sendOwed() } else { receiveNext() }
        }
        onSent = { [self] r in
            guard case .success = r else { close(); return }
            if owed > 0 { sendOwed() } else { receiveNext() }
        }
    }

    func receiveNext() {
        guard !closed, let cb = onReceive else { return }
        server.loop.receive(socket, into: buffer, cb)
    }

    func sendOwed() {
        guard !closed, let cb = onSent else { return }
        let n = min(owed, EchoServer<L>.maxBatch)
        owed -= n
        server.loop.send(socket, UnsafeRawBufferPointer(rebasing: server.replies[0..<(n * replySize)]), cb)
    }

    func close() {
        guard !closed else { return }
        closed = true
        server.loop.close(socket)
        server.conns[socket.fd] = nil
    }
}

// MARK: Client

private final class EchoClient<L: EventLoop> {
    let loop: L
    var conns: [ClientConn<L>] = []
    var completed = 0
    var running = true
    let requestBuffer: UnsafeMutableRawBufferPointer

    init(loop: L) {
        self.loop = loop
        requestBuffer = .allocate(byteCount: requestSize, alignment: 16)
        for i in 0..<requestSize { requestBuffer[i] = request[i] }
    }

    func connectAll(to address: SocketAddress, count: Int, _ done: @escaping (String?) -> Void) {
        var pending = count
        var failure: String?
        for _ in 0..<count {
            loop.connect(to: address, from: nil, timeout: 10_000_000_000) { [unowned self] r in
                switch r {
                case .success(let s): conns.append(ClientConn(client: self, socket: s))
                case .failure(let e): failure = failure ?? "connect: \(e)"
                }
                pending -= 1
                if pending == 0 { done(failure) }
            }
        }
    }

    func startAll() { for c in conns { c.sendRequest() } }

    func shutdown() {
        running = false
        for c in conns { c.close() }
    }
}

private final class ClientConn<L: EventLoop> {
    let client: EchoClient<L>
    let socket: Socket
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    var got = 0
    var closed = false
    var onSent: ((Result<Void, IOError>) -> Void)?
    var onReceive: ((Result<Int, IOError>) -> Void)?

    init(client: EchoClient<L>, socket: Socket) {
        self.client = client
        self.socket = socket
        onSent = { [self] r in
            guard case .success = r else { close(); return }
            receiveNext()
        }
        onReceive = { [self] r in
            guard case .success(let n) = r, n > 0 else { close(); return }
            got += n
            if got < replySize { receiveNext(); return }
            got -= replySize
            client.completed += 1
            if client.running { sendRequest() }
        }
    }

    func sendRequest() {
        guard !closed, let cb = onSent else { return }
        client.loop.send(socket, UnsafeRawBufferPointer(client.requestBuffer), cb)
    }

    func receiveNext() {
        guard !closed, let cb = onReceive else { return }
        client.loop.receive(socket, into: buffer, cb)
    }

    func close() {
        guard !closed else { return }
        closed = true
        client.loop.close(socket)
    }
}

// MARK: One backend

private func runBackend<L: EventLoop>(_ type: L.Type, connections: Int, duration: Double,
                                      requestLimit: Int?) -> EchoFigures {
    var fig = EchoFigures(backend: L.kind.rawValue, status: "ok")
    let serverLoop: L
    let clientLoop: L
    do {
        serverLoop = try L()
        clientLoop = try L()
    } catch {
        fig.status = "skipped: \(error)"
        return fig
    }
    let serverDone = DispatchSemaphore(value: 0)
    let clientDone = DispatchSemaphore(value: 0)
    let sl = Unsafe(v: serverLoop), cl = Unsafe(v: clientLoop)
    Thread { sl.v.run(); serverDone.signal() }.start()
    Thread { cl.v.run(); clientDone.signal() }.start()
    defer {
        serverLoop.stop(); clientLoop.stop()
        if serverDone.wait(timeout: .now() + 10) != .success || clientDone.wait(timeout: .now() + 10) != .success {
            fputs("peregrine-bench: \(L.kind) loop did not stop within 10 s\n", stderr)
        }
    }

    let server = Unsafe(v: EchoServer(loop: serverLoop))
    let client = Unsafe(v: EchoClient(loop: clientLoop))

    // Server up.
    let bound = Waiter<Result<SocketAddress, IOError>>()
    serverLoop.execute {
        do throws(IOError) {
            bound.put(.success(try server.v.start(try SocketAddress(ip: "127.0.0.1", port: 0))))
        } catch { bound.put(.failure(error)) }
    }
    guard let b = bound.wait(10) else { fig.status = "failed: server did not start"; return fig }
    let address: SocketAddress
    switch b {
    case .success(let a): address = a
    case .failure(let e): fig.status = "failed: listen: \(e)"; return fig
    }

    // Connect everything, then start the traffic.
    let connected = Waiter<String?>()
    clientLoop.execute { client.v.connectAll(to: address, count: connections) { connected.put($0) } }
    guard let c = connected.wait(30) else { fig.status = "failed: connections not up within 30 s"; return fig }
    if let why = c { fig.status = "failed: \(why)"; return fig }
    fig.connections = connections
    clientLoop.execute { client.v.startAll() }

    // Short warm-up, then the measured window.
    usleep(200_000)
    func snapshot() -> Int? {
        let w = Waiter<Int>()
        clientLoop.execute { w.put(client.v.completed) }
        return w.wait(10)
    }
    guard let startCount = snapshot() else { fig.status = "failed: client loop unresponsive"; return fig }
    let cpu0 = cpuTimes()
    let t0 = monotonicNanoseconds()
    let deadline = t0 + UInt64(duration * 1e9)
    var endCount = startCount
    while true {
        let nowNs = monotonicNanoseconds()
        if nowNs >= deadline { break }
        if let limit = requestLimit {
            usleep(20_000)
            guard let n = snapshot() else { break }
            endCount = n
            if n - startCount >= limit { break }
        } else {
            usleep(UInt32(min(100_000, (deadline - nowNs) / 1000)))
        }
    }
    guard let final = snapshot() else { fig.status = "failed: client loop unresponsive"; return fig }
    endCount = final
    let t1 = monotonicNanoseconds()
    let cpu1 = cpuTimes()
    fig.requests = endCount - startCount
    fig.seconds = Double(t1 - t0) / 1e9
    fig.cpuUser = cpu1.user - cpu0.user
    fig.cpuSystem = cpu1.system - cpu0.system
    if fig.requests == 0 { fig.status = "failed: no request completed" }

    // Tear down: clients first, then the server.
    let clientClosed = Waiter<Bool>()
    clientLoop.execute { client.v.shutdown(); clientClosed.put(true) }
    _ = clientClosed.wait(10)
    let serverClosed = Waiter<Bool>()
    serverLoop.execute { server.v.shutdown(); serverClosed.put(true) }
    _ = serverClosed.wait(10)
    return fig
}

private func measure<L: EventLoop>(_ type: L.Type, _ c: Int, _ d: Double, _ r: Int?) -> EchoFigures {
    runBackend(type, connections: c, duration: d, requestLimit: r)
}

// MARK: Entry point

func runEchoBench(arguments: [String]) -> Int32 {
    var connections = 64
    var duration = 5.0
    var requestLimit: Int?
    var backends = BackendKind.allCases
    var output: String?

    var i = 0
    func value(_ flag: String) -> String? {
        i += 1
        guard i < arguments.count else { fputs("peregrine-bench echo: \(flag) needs a value\n", stderr); return nil }
        return arguments[i]
    }
    while i < arguments.count {
        let arg = arguments[i]
        switch arg {
        case "-h", "--help":
            print(echoUsage); return 0
        case "--connections", "-c":
            guard let v = value(arg), let n = Int(v), n > 0, n <= 10_000 else {
                fputs("peregrine-bench echo: --connections wants an integer in 1...10000\n", stderr); return 2
            }
            connections = n
        case "--duration", "-d":
            guard let v = value(arg), let d = Double(v), d > 0, d <= 3600 else {
                fputs("peregrine-bench echo: --duration wants seconds in (0, 3600]\n", stderr); return 2
            }
            duration = d
        case "--requests", "-n":
            guard let v = value(arg), let n = Int(v), n > 0 else {
                fputs("peregrine-bench echo: --requests wants a positive integer\n", stderr); return 2
            }
            requestLimit = n
            if !arguments.contains("--duration") && !arguments.contains("-d") { duration = 600 }
        case "--backends", "--backend", "-b":
            guard let v = value(arg) else { return 2 }
            var list: [BackendKind] = []
            for name in v.split(separator: ",") {
                switch BackendKind.parse(String(name)) {
                case .success(let k): list.append(k)
                case .failure(let e): fputs("peregrine-bench echo: \(e)\n", stderr); return 2
                }
            }
            if list.isEmpty { fputs("peregrine-bench echo: --backends is empty\n", stderr); return 2 }
            backends = list
        case "--output", "-o":
            guard let v = value(arg) else { return 2 }
            output = v
        default:
            fputs("peregrine-bench echo: unknown option '\(arg)'\n\(echoUsage)\n", stderr)
            return 2
        }
        i += 1
    }

    let cores = ProcessInfo.processInfo.activeProcessorCount
    let kernel = BenchEnvironment.kernelRelease()
    let mode = requestLimit.map { "\($0) requests (cap \(duration) s)" } ?? "\(duration) s"
    print("echo: \(connections) connections, \(requestSize)-byte request / \(replySize)-byte reply, \(mode) per backend")
    print("      server loop thread + client loop thread of the same backend, in one process")
    print("      (\(cores) cores, Linux \(kernel))")

    var results: [EchoFigures] = []
    for kind in backends {
        print("  \(kind)...", terminator: "")
        fflush(stdout)
        let fig = measure(kind.loopType, connections, duration, requestLimit)
        print(fig.status == "ok" ? String(format: " %.0f req/s", fig.requestsPerSecond) : " \(fig.status)")
        results.append(fig)
    }

    print("")
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    print(pad("backend", 10) + lpad("requests", 12) + lpad("req/s", 12) + lpad("CPU s/100k req", 16)
          + lpad("user s", 9) + lpad("sys s", 9) + "  status")
    for f in results {
        let ok = f.status == "ok"
        print(pad(f.backend, 10)
              + lpad(ok ? "\(f.requests)" : "-", 12)
              + lpad(ok ? String(format: "%.0f", f.requestsPerSecond) : "-", 12)
              + lpad(ok ? String(format: "%.3f", f.cpuPer100k) : "-", 16)
              + lpad(ok ? String(format: "%.2f", f.cpuUser) : "-", 9)
              + lpad(ok ? String(format: "%.2f", f.cpuSystem) : "-", 9)
              + "  " + f.status)
    }
    print("CPU = getrusage(RUSAGE_SELF) user+system of the whole process (server and client loops together).")

    // JSON
    let date = BenchEnvironment.today()
    let path = output ?? "results/echo-\(date).json"
    var machine: [String: Any] = ["cores": cores, "kernel": kernel]
    machine["arch"] = BenchEnvironment.machine()["machine"] ?? "?"
    var doc: [String: Any] = [
        "benchmark": "echo",
        "date": date,
        "machine": machine,
        "parameters": [
            "connections": connections,
            "duration_seconds": duration,
            "request_limit": requestLimit as Any? ?? NSNull(),
            "request_bytes": requestSize,
            "reply_bytes": replySize,
            "topology": "one server loop thread + one client loop thread per backend, same process, 127.0.0.1",
            "cpu": "getrusage(RUSAGE_SELF) user+system: server and client together",
        ] as [String: Any],
        "backends": results.map { f -> [String: Any] in
            var d: [String: Any] = ["backend": f.backend, "status": f.status]
            if f.status == "ok" {
                d["requests"] = f.requests
                d["seconds"] = (f.seconds * 1000).rounded() / 1000
                d["requests_per_second"] = f.requestsPerSecond.rounded()
                d["cpu_user_seconds"] = (f.cpuUser * 1000).rounded() / 1000
                d["cpu_system_seconds"] = (f.cpuSystem * 1000).rounded() / 1000
                d["cpu_seconds_per_100k_requests"] = (f.cpuPer100k * 1000).rounded() / 1000
            }
            return d
        },
    ]
    doc["git_commit"] = BenchEnvironment.gitCommit()
    do {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    } catch {
        fputs("peregrine-bench echo: cannot write \(path): \(error)\n", stderr)
        return 1
    }
    return results.contains { $0.status == "ok" } ? 0 : 1
}
