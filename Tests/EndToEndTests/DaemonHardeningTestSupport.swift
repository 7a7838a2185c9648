#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO

// Helpers of the hardening end-to-end tests (issue 12 items 1, 4, 5, 7):
// raw sockets bound to chosen loopback sources, /proc readings of the
// daemon, curl against the management port.

/// The suite's own loopback addresses: scenarios 91-99 of this test
/// process's private prefix (127.P.(90 + SCENARIO).(backend × 10 + host)).
func hardeningIP(_ scenario: Int, _ kind: BackendKind, host: Int = 0) -> String {
    E2E.ip(90 + scenario, kind, host: host)
}

/// A blocking TCP client, optionally bound to a source address, with a
/// receive timeout; reads SMTP replies and notices EOF.
final class RawSMTPClient {
    let fd: Int32
    private var pending: [UInt8] = []
    private(set) var sawEOF = false

    init(_ ip: String, _ port: UInt16, from source: String? = nil, receiveBuffer: Int32? = nil,
         timeoutSeconds: Int = 15) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SinkTestError("socket failed") }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        if let source {
            let local = try SocketAddress(ip: source, port: 0)
            guard local.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
                throw SinkTestError("bind \(source) failed: errno \(errno)")
            }
        }
        let remote = try SocketAddress(ip: ip, port: port)
        var r = remote.withSockAddr { connect(fd, $0, $1) }
        if r != 0 && errno == EINTR {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var n: Int32
            repeat { n = poll(&p, 1, 15_000) } while n < 0 && errno == EINTR
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            r = n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1
        }
        guard r == 0 else { throw SinkTestError("connect \(ip):\(port) failed: errno \(errno)") }
    }

    // The only close. A class whose init throws (or returns nil) after its
    // stored properties are set still runs deinit, so a close in init too
    // closed the number twice: by then, under parallel suites, it could be
    // another test's socket.
    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Sends all of `bytes` (blocking); false when the peer is gone.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// One reply (its lines joined by "\n"); nil at EOF or timeout.
    func reply() -> String? {
        var lines: [String] = []
        while let line = readLine() {
            lines.append(line)
            let u = Array(line.utf8)
            if u.count < 4 || u[3] != UInt8(ascii: "-") { return lines.joined(separator: "\n") }
        }
        return nil
    }

    private func readLine() -> String? {
        while true {
            if let i = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<i], as: UTF8.self).trimmingCharacters(in: ["\r"])
                pending.removeSubrange(...i)
                return line
            }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n == 0 { sawEOF = true }
            guard n > 0 else { return nil }
            pending += buf[0..<n]
        }
    }

    /// Reads until EOF (or the receive timeout); true at EOF.
    func waitForEOF() -> Bool {
        while readLine() != nil {}
        return sawEOF
    }
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
func procStatusKB(_ pid: Int32, _ field: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }
    return nil
}

/// The numbers of a process's open descriptors.
func openDescriptorNumbers(_ pid: Int32) -> [Int] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int($0) }
}

/// curl against the daemon's management port: (HTTP status, body). curl is
/// installed by scripts/setup (checked by scripts/check-tools).
func curl(_ args: [String]) -> (status: Int, body: String) {
    let r = E2E.run("/usr/bin/curl", ["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"] + args, timeout: 30)
    let text = r.stdout
    guard let nl = text.lastIndex(of: "\n") else { return (0, text + r.stderr) }
    return (Int(text[text.index(after: nl)...]) ?? 0, String(text[..<nl]))
}
