import Foundation
import PeregrineIO

/// A blocking SMTP client for the test thread: sends lines, reads replies,
/// reads to EOF. Every receive retries EINTR (another test's child process
/// raises SIGCHLD) and gives up after a 10 s receive timeout.
final class SMTPTestClient {
    private let fd: Int32
    private var pending: [UInt8] = []

    init?(port: UInt16) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let addr = try? SocketAddress(ip: "127.0.0.1", port: port) else { return nil }
        var rc: Int32
        repeat { rc = addr.withSockAddr { Glibc.connect(fd, $0, $1) } } while rc < 0 && errno == EINTR
        guard rc == 0 else { return nil }
    }

    // The only close. A class whose init throws (or returns nil) after its
    // stored properties are set still runs deinit, so a close in init too
    // closed the number twice: by then, under parallel suites, it could be
    // another test's socket.
    deinit { if fd >= 0 { close(fd) } }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }

    /// One reply (all its lines, CRLF-joined); nil at EOF or timeout.
    func reply() -> String? {
        var lines: [String] = []
        while let line = line() {
            lines.append(line)
            if line.count < 4 || Array(line.utf8)[3] != UInt8(ascii: "-") { return lines.joined(separator: "\r\n") }
        }
        return nil
    }

    /// Everything until the server closes (empty when it closed without another byte).
    func readToEOF() -> [UInt8] {
        var out = pending
        pending.removeAll()
        while let chunk = receive() { out += chunk }
        return out
    }

    private func line() -> String? {
        while true {
            if let lf = pending.firstIndex(of: 10) {
                let end = lf > 0 && pending[lf - 1] == 13 ? lf - 1 : lf
                let s = String(decoding: pending[..<end], as: UTF8.self)
                pending.removeSubrange(...lf)
                return s
            }
            guard let chunk = receive() else { return nil }
            pending += chunk
        }
    }

    private func receive() -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            return n > 0 ? Array(buf[0..<n]) : nil
        }
    }
}
