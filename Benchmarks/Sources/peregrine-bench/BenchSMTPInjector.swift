import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A tiny blocking SMTP client for the few messages a scenario addresses by
/// hand (unknown users, greylisted recipients): the load generator draws its
/// local parts itself, so the bench injects these on one connection of its
/// own. Each message carries `X-Loadgen-Id` like the generator's, so the
/// sink's id list covers them too.
final class BenchSMTPInjector {
    private let fd: Int32
    private var buffer: [UInt8] = []

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(ip: String, port: UInt16) throws {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &addr.sin_addr)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw Failure(description: "connect \(ip):\(port): errno \(errno)") }
        _ = try expect("220", "greeting")
        try send("EHLO bench.peregrine.test\r\n")
        _ = try expect("250", "EHLO")
    }

    deinit { close(fd) }

    /// Sends one message; returns true when the server accepted it (250 after DATA).
    /// With `listUnsubscribe` the message carries RFC 8058 one-click unsubscribe headers (bulk mail to Gmail/Yahoo).
    func send(id: String, from: String, to: String, size: Int = 2048, listUnsubscribe: Bool = false) throws -> Bool {
        try send("MAIL FROM:<\(from)>\r\n")
        guard try reply().hasPrefix("250") else { try rset(); return false }
        try send("RCPT TO:<\(to)>\r\n")
        guard try reply().hasPrefix("250") else { try rset(); return false }
        try send("DATA\r\n")
        guard try reply().hasPrefix("354") else { try rset(); return false }
        var body = "From: <\(from)>\r\nTo: <\(to)>\r\nSubject: bench \(id)\r\nMessage-ID: <\(id)@bench.peregrine.test>\r\n"
        if listUnsubscribe, let domain = from.split(separator: "@").last {
            body += "List-Unsubscribe: <https://\(domain)/unsubscribe/\(id)>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        }
        body += "X-Loadgen-Id: \(id)\r\nX-Loadgen-Sent: \(Int64(Date().timeIntervalSince1970 * 1e9))\r\n\r\n"
        let line = String(repeating: "x", count: 76) + "\r\n"
        while body.utf8.count < size { body += line }
        body += ".\r\n"
        try send(body)
        return try reply().hasPrefix("250")
    }

    func quit() {
        try? send("QUIT\r\n")
        _ = try? reply()
    }

    private func rset() throws {
        try send("RSET\r\n")
        _ = try reply()
    }

    private func expect(_ code: String, _ what: String) throws -> String {
        let r = try reply()
        guard r.hasPrefix(code) else { throw Failure(description: "\(what): \(r)") }
        return r
    }

    private func send(_ text: String) throws {
        var bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            off += n
        }
        bytes.removeAll()
    }

    /// Reads one (possibly multi-line) reply; returns its last line.
    private func reply() throws -> String {
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self).trimmingCharacters(in: ["\r"])
                buffer.removeSubrange(...nl)
                if line.count >= 4, Array(line.utf8)[3] == UInt8(ascii: "-") { continue }
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "connection closed while waiting for a reply") }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}
