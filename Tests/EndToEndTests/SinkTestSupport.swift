#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
@testable import PeregrineSink

/// Runs the real `peregrine-sink` executable for a test: started on loopback,
/// waited for until it says ready, always terminated (SIGTERM, then SIGKILL).
final class SinkProcess {
    let process = Process()
    let stdoutPipe = Pipe()
    let stderrPipe = Pipe()
    private(set) var listening: [String: [(ip: String, port: UInt16)]] = [:]
    private(set) var statsAddress: String?
    private(set) var dnsPort: UInt16?
    private var output = Data()
    private var finished = false

    static var executable: String { E2E.executable("peregrine-sink") }

    static var profiles: String { SinkProfileTests.profilesDir }

    /// Result of a run that is expected to fail at start-up.
    static func runToExit(_ args: [String], timeout: Double = 30) -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try ChildProcess.run(p) } catch { return (-1, "", "\(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        p.waitUntilExit()
        let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (p.terminationStatus, o, e)
    }

    init(_ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = args
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try ChildProcess.run(process)
        // Read lines until "ready" (bounded).
        let fd = stdoutPipe.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(30)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var text = ""
        while !text.contains("peregrine-sink: ready") {
            guard Date() < deadline, process.isRunning || poll(fd) else { break }
            guard poll(fd) else { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        guard text.contains("peregrine-sink: ready") else {
            terminate()
            let err = String(decoding: stderrPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw SinkTestError("sink did not start: \(text) \(err)")
        }
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.count == 4, words[1] == "listening" {
                let addr = String(words[3])
                guard let colon = addr.lastIndex(of: ":"), let port = UInt16(addr[addr.index(after: colon)...]) else { continue }
                listening[String(words[2]), default: []].append((String(addr[..<colon]), port))
            } else if words.count == 3, words[1] == "stats" {
                statsAddress = String(words[2]).replacingOccurrences(of: "http://", with: "").replacingOccurrences(of: "/stats", with: "")
            } else if words.count == 3, words[1] == "dns", let c = words[2].lastIndex(of: ":") {
                dnsPort = UInt16(words[2][words[2].index(after: c)...])
            }
        }
    }

    private func poll(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return Glibc.poll(&p, 1, 100) > 0
    }

    func address(_ provider: String, _ index: Int = 0) throws -> (ip: String, port: UInt16) {
        guard let list = listening[provider], index < list.count else { throw SinkTestError("no listener for \(provider)") }
        return list[index]
    }

    /// SIGTERM, wait (bounded), SIGKILL if needed; returns what it printed.
    @discardableResult
    func terminate() -> String {
        guard !finished else { return String(decoding: output, as: UTF8.self) }
        finished = true
        stopProcess(process)
        output = stdoutPipe.fileHandleForReading.readDataToEndOfFile()
        return String(decoding: output, as: UTF8.self)
    }

    deinit { terminate() }
}

struct SinkTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A reply as a client sees it.
struct WireReply: CustomStringConvertible {
    var code: Int
    var lines: [String]
    /// All lines without the codes, joined with a space.
    var text: String {
        lines.map { $0.count > 4 ? String($0.dropFirst(4)) : "" }.joined(separator: " ")
    }
    var description: String { lines.joined(separator: " | ") }
}

/// A blocking SMTP client for tests: every read has a timeout, so a stuck
/// server fails the test instead of hanging it.
final class SinkTestClient {
    let fd: Int32
    private var pending: [UInt8] = []
    private(set) var closedByPeer = false

    /// `from`: the source address to bind first (a private 127.x.y.z, so that
    /// one test can be several sending IPs); the port is the kernel's.
    init(_ ip: String, _ port: UInt16, from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SinkTestError("socket failed") }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_port = 0
            inet_pton(AF_INET, source, &local.sin_addr)
            let b = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard b == 0 else { let e = errno; throw SinkTestError("bind \(source) failed: errno \(e)") }
        }
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &sa.sin_addr)
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r != 0 && errno == EINTR {
            // A signal (Foundation's SIGCHLD handler, a child of a parallel test exiting)
            // interrupted the connect; it goes on in the background: wait for it.
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            var n: Int32
            repeat { n = poll(&p, 1, 15_000) } while n < 0 && errno == EINTR
            if n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 { return }
            throw SinkTestError("connect \(ip):\(port) failed after EINTR: \(n == 1 ? "errno \(err)" : "timed out")")
        }
        guard r == 0 else { throw SinkTestError("connect \(ip):\(port) failed: errno \(errno)") }
    }

    // The only close. A class whose init throws (or returns nil) after its
    // stored properties are set still runs deinit, so a close in init too
    // closed the number twice: by then, under parallel suites, it could be
    // another test's socket (SinkMXFaultTests failed with recv errno 9).
    deinit { if fd >= 0 { Glibc.close(fd) } }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SinkTestError("send failed: errno \(errno)") }
            off += n
        }
    }

    private func readLine() throws -> String? {
        while true {
            if let i = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<i], as: UTF8.self).trimmingCharacters(in: ["\r"])
                pending.removeSubrange(...i)
                return line
            }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            // A socket with SO_RCVTIMEO is never restarted after a signal handler
            // ran (signal(7)), even with SA_RESTART: the SIGCHLD of a child process
            // another test started (Foundation's Process watches it) lands here as EINTR.
            if n < 0 && errno == EINTR { continue }
            if n == 0 { closedByPeer = true; return nil }
            guard n > 0 else { throw SinkTestError("recv failed or timed out: errno \(errno)") }
            pending += buf[0..<n]
        }
    }

    /// Reads one (possibly multi-line) reply; nil when the server closed first.
    func reply() throws -> WireReply? {
        var lines: [String] = []
        while let line = try readLine() {
            lines.append(line)
            let u = Array(line.utf8)
            if u.count < 4 || u[3] != UInt8(ascii: "-") {
                return WireReply(code: Int(line.prefix(3)) ?? 0, lines: lines)
            }
        }
        return lines.isEmpty ? nil : WireReply(code: Int(lines[0].prefix(3)) ?? 0, lines: lines)
    }

    func command(_ line: String) throws -> WireReply? {
        try send(line + "\r\n")
        return try reply()
    }

    /// Whether the server sent anything (or closed) within `ms` milliseconds.
    func hasInput(withinMilliseconds ms: Int32) -> Bool {
        if !pending.isEmpty || closedByPeer { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var n: Int32
        repeat { n = poll(&p, 1, ms) } while n < 0 && errno == EINTR
        return n > 0
    }

    /// True when the server has closed the connection (EOF now).
    func isClosedByPeer() -> Bool {
        if closedByPeer { return true }
        var buf = [UInt8](repeating: 0, count: 1)
        let n = recv(fd, &buf, 1, Int32(MSG_PEEK))
        return n == 0
    }

    /// Greeting + EHLO; returns the greeting.
    func start() throws -> WireReply? {
        guard let g = try reply() else { return nil }
        if g.code == 220 { _ = try command("EHLO client.test") }
        return g
    }

    /// One whole transaction; returns the first non-positive reply and the phase
    /// it came at, or nil when the message was accepted.
    func sendMessage(from: String = "sender@example.com", to: String, id: String? = nil) throws -> (String, WireReply?)? {
        guard let m = try command("MAIL FROM:<\(from)>") else { return ("mail", nil) }
        if m.code != 250 { return ("mail", m) }
        guard let r = try command("RCPT TO:<\(to)>") else { return ("rcpt", nil) }
        if r.code != 250 { _ = try? command("RSET"); return ("rcpt", r) }
        guard let d = try command("DATA") else { return ("data-command", nil) }
        if d.code != 354 { return ("data-command", d) }
        var body = ""
        if let id { body += "X-Loadgen-Id: \(id)\r\n" }
        body += "Subject: test\r\n\r\nHello.\r\n.\r\n"
        try send(body)
        guard let e = try reply() else { return ("data", nil) }
        return e.code == 250 ? nil : ("data", e)
    }
}
