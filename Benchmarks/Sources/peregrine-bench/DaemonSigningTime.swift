import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the daemon itself measured of DKIM signing in a run: the
/// `peregrine_dkim_signing_duration_seconds` histogram's sum and count from
/// its /metrics (wall time of the whole signing call on the loop thread, all
/// of a message's signatures). Read against `openssl speed` it isolates what
/// Peregrine's signing path adds to the raw signature (body hash, header
/// canonicalisation, field text) from the rest of the relay, which the
/// CPU-per-message difference between two runs cannot do when the runs move
/// at different rates.
struct DaemonSigningTime {
    var seconds: Double
    var messages: Int

    var microsecondsPerMessage: Double? { messages > 0 ? seconds / Double(messages) * 1e6 : nil }

    var json: [String: Any] {
        var d: [String: Any] = ["sumSeconds": seconds, "messages": messages]
        if let us = microsecondsPerMessage { d["microsecondsPerMessage"] = us }
        return d
    }

    static func read(ip: String, port: UInt16) -> DaemonSigningTime? {
        guard let text = BenchNet.getText(ip: ip, port: port, path: "/metrics") else { return nil }
        var sum: Double?, count: Int?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("peregrine_dkim_signing_duration_seconds_sum ") {
                sum = line.split(separator: " ").last.flatMap { Double($0) }
            } else if line.hasPrefix("peregrine_dkim_signing_duration_seconds_count ") {
                count = line.split(separator: " ").last.flatMap { Double($0) }.map { Int($0) }
            }
        }
        guard let sum, let count else { return nil }
        return DaemonSigningTime(seconds: sum, messages: count)
    }
}

extension BenchNet {
    /// GET a small text document over HTTP/1.0 (the daemon's /metrics); its body, or nil.
    static func getText(ip: String, port: UInt16, path: String) -> String? {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &addr.sin_addr)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { return nil }
        let req = Array("GET \(path) HTTP/1.0\r\nHost: \(ip)\r\nConnection: close\r\n\r\n".utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        return String(text[split.upperBound...])
    }
}
