#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport

/// A small SMTP receiver on a loopback address of the test's own, one thread
/// per connection, whose RCPT replies follow a script (by the RCPT's number
/// over the receiver's life). It publishes what it has read and written only
/// after it has answered, so a virtual-time test can tell "nothing in flight"
/// from "a reply is on its way" (`VirtualTimeLoop`).
final class ScriptedReceiver: @unchecked Sendable {
    struct Counters: Equatable { var accepted = 0, rcpts = 0, messages = 0 }
    /// One connection as the receiver saw it: bytes read and answered, bytes written.
    struct Peer: Equatable { var read = 0, written = 0 }

    let ip: String
    private(set) var port: UInt16 = 0
    private let listenFD: Int32
    private let lock = NSLock()
    private var counters = Counters()
    /// By the client's port (the engine's local port).
    private var peers: [UInt16: Peer] = [:]
    private var closed = false
    private let rcptReply: @Sendable (Int) -> String

    /// `rcptReply(n)` answers the n-th RCPT (from 1), e.g. "250 2.1.5 ok".
    init(ip: String, rcptReply: @escaping @Sendable (Int) -> String) throws {
        self.ip = ip
        self.rcptReply = rcptReply
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listenFD >= 0 else { throw ReceiverError("socket: errno \(errno)") }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = 0  // the kernel picks; read back below
        inet_pton(AF_INET, ip, &sa.sin_addr)
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(listenFD, 64) == 0 else {
            // deinit closes it (it runs: every stored property is set by now).
            throw ReceiverError("bind/listen \(ip): errno \(errno)")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listenFD, $0, &len) }
        }
        port = UInt16(bigEndian: sa.sin_port)
        let t = Thread { [self] in acceptLoop() }
        t.start()
    }

    var snapshot: Counters { lock.withLock { counters } }
    /// What the receiver has read and written on the connection from `clientPort`
    /// (nil: not accepted and greeted yet).
    func peer(_ clientPort: UInt16) -> (read: Int, written: Int)? {
        lock.withLock { peers[clientPort].map { ($0.read, $0.written) } }
    }

    /// Stops accepting (the accept thread ends on the shutdown).
    func stop() {
        lock.withLock { closed = true }
        shutdown(listenFD, Int32(SHUT_RDWR))
    }

    deinit { if listenFD >= 0 { Glibc.close(listenFD) } }

    private func acceptLoop() {
        while true {
            var from = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let fd = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listenFD, $0, &len) }
            }
            // accept4 is not in Glibc's Swift module: close-on-exec by hand (children must not inherit it).
            if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            if fd < 0 {
                if errno == EINTR { continue }
                return
            }
            if lock.withLock({ closed }) { Glibc.close(fd); return }
            let clientPort = UInt16(bigEndian: from.sin_port)
            let t = Thread { [self] in serve(fd, clientPort) }
            t.start()
        }
    }

    private func write(_ fd: Int32, _ text: String) -> Int {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            off += n
        }
        return bytes.count
    }

    private func serve(_ fd: Int32, _ clientPort: UInt16) {
        defer { Glibc.close(fd) }
        let greeting = write(fd, "220 mx.virtual.test ESMTP\r\n")
        lock.withLock { counters.accepted += 1; peers[clientPort] = Peer(read: 0, written: greeting) }
        var pending: [UInt8] = []
        var inData = false
        var buf = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            pending += buf[0..<n]
            var replies = "", rcpts = 0, messages = 0, quit = false
            while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<nl], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                pending.removeSubrange(...nl)
                if inData {
                    if line == "." { inData = false; messages += 1; replies += "250 2.0.0 queued\r\n" }
                    continue
                }
                let verb = line.prefix(4).uppercased()
                switch verb {
                case "EHLO", "HELO": replies += "250 mx.virtual.test\r\n"
                case "MAIL", "RSET", "NOOP": replies += "250 2.0.0 ok\r\n"
                case "RCPT":
                    rcpts += 1
                    let number = lock.withLock { counters.rcpts + rcpts }
                    replies += rcptReply(number) + "\r\n"
                case "DATA": inData = true; replies += "354 go ahead\r\n"
                case "QUIT": replies += "221 2.0.0 bye\r\n"; quit = true
                default: replies += "502 5.5.2 not here\r\n"
                }
            }
            let written = replies.isEmpty ? 0 : write(fd, replies)
            lock.withLock {
                peers[clientPort, default: Peer()].read += n
                peers[clientPort, default: Peer()].written += written
                counters.rcpts += rcpts
                counters.messages += messages
            }
            if quit { return }
        }
    }
}

struct ReceiverError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
