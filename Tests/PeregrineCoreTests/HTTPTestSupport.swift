import Foundation
import PeregrineTestSupport
import Testing
import Glibc
import PeregrineIO

/// Runs one loop of type `L` on its own thread (created there, as io_uring's
/// single-issuer rings want) for the HTTP and DNS resolver tests.
final class CoreLoopHarness<L: EventLoop>: @unchecked Sendable {
    let loop: L
    private let finished = DispatchSemaphore(value: 0)

    /// Skips the test case when the backend cannot run here (missing kernel
    /// feature); any other failure to create the loop is a failure.
    init(_ type: L.Type) throws {
        let ready = DispatchSemaphore(value: 0)
        let slot = HarnessSlot<L>()
        let finished = self.finished
        let t = Thread {
            do { slot.loop = try L() } catch {
                slot.error = error
                ready.signal(); finished.signal(); return
            }
            ready.signal()
            slot.loop?.run()
            finished.signal()
        }
        t.start()
        ready.wait()
        guard let l = slot.loop else {
            let error = slot.error ?? IOError(.unsupported("no loop"), "\(L.kind)")
            if let e = error as? IOError, case .unsupported = e.kind {
                try Skip.because("the \(L.kind) backend cannot start here: \(e)")
            }
            throw error
        }
        loop = l
    }

    /// Runs `body` on the loop thread and waits for its result (nil after `seconds`).
    func sync<T>(_ seconds: Double = 10, _ body: @escaping (L) -> T) -> T? {
        self.await(seconds) { loop, reply in reply(body(loop)) }
    }

    /// Runs `body` on the loop; it calls `reply` once, possibly later; waits up to `seconds`.
    func await<T>(_ seconds: Double = 10, _ body: @escaping (L, @escaping (T) -> Void) -> Void) -> T? {
        let box = HarnessBox<T>()
        let sem = DispatchSemaphore(value: 0)
        let u = HarnessUnchecked(body: body, loop: loop)
        loop.execute {
            u.body(u.loop) { v in box.set(v); sem.signal() }
        }
        guard sem.wait(timeout: .now() + seconds) == .success else { return nil }
        return box.get()
    }

    func stop() {
        loop.stop()
        _ = finished.wait(timeout: .now() + 5)
    }
}

final class HarnessSlot<L>: @unchecked Sendable { var loop: L?; var error: Error? }
final class HarnessBox<T>: @unchecked Sendable {
    let lock = NSLock(); var value: T?
    func set(_ v: T) { lock.lock(); if value == nil { value = v }; lock.unlock() }
    func get() -> T? { lock.lock(); defer { lock.unlock() }; return value }
}
struct HarnessUnchecked<L, T>: @unchecked Sendable { let body: (L, @escaping (T) -> Void) -> Void; let loop: L }

/// Runs a command, returns (exit status, stdout).
func runProcess(_ path: String, _ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try ChildProcess.run(p)
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func findExecutable(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

/// A blocking TCP exchange from the test thread: connects, sends `request`,
/// optionally half-closes, reads until EOF (or a 5 s receive timeout).
func rawTCPExchange(port: UInt16, _ request: [UInt8], halfClose: Bool = false) -> [UInt8] {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    guard let addr = try? SocketAddress(ip: "127.0.0.1", port: port) else { return [] }
    let rc = addr.withSockAddr { Glibc.connect(fd, $0, $1) }
    guard rc == 0 else { return [] }
    _ = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    if halfClose { shutdown(fd, Int32(SHUT_WR)) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
        // SO_RCVTIMEO: not restarted after a signal handler (signal(7)); the SIGCHLD
        // of another test's child process must not end the exchange early.
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}
