import Foundation
import Glibc
import PeregrineIO
import Testing
@testable import PeregrineHTTP

// Issue 12 item 5: stalled clients must not lock the operator out of the
// management server. Every backend: connections that send one byte and
// stall fill the server, yet a complete request still gets its answer (the
// longest-waiting stalled one is evicted), and a client trickling bytes is
// closed once its request deadline passes.
@Suite("HTTP management server limits", .serialized, .timeLimit(.minutes(10)), .blockingIO)
struct ManagementServerLimitTests {
    /// A connected blocking socket to 127.0.0.1:port with a 10 s receive timeout.
    static func connect(_ port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let addr = try? SocketAddress(ip: "127.0.0.1", port: port), addr.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    static func send(_ fd: Int32, _ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until EOF (or the receive timeout); retries EINTR.
    /// Reads until the server closes. `eof` is also true for a reset: a server
    /// that closes while a trickled byte sits unread in its receive buffer
    /// makes the kernel send RST instead of FIN (seen on Dispatch under load).
    static func readToEOF(_ fd: Int32) -> (bytes: [UInt8], eof: Bool) {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return (out, errno == ECONNRESET) }
            if n == 0 { return (out, true) }
            out += buf[0..<n]
        }
    }

    func withServer<L: EventLoop>(_ type: L.Type, maxConnections: Int, idleTimeout: UInt64,
                                  _ body: (UInt16, @escaping () -> Int) throws -> Void) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let started: ManagementServer<L>?? = h.sync { loop -> ManagementServer<L>? in
            var options = ManagementServer<L>.Options.loopback(port: 0)
            options.maxConnections = maxConnections
            options.idleTimeout = idleTimeout
            let server = ManagementServer(loop: loop, options: options) { _ in .json("{\"ok\":true}") }
            do { try server.start() } catch { return nil }
            return server
        }
        let server = try #require(started ?? nil)
        let port = try #require(h.sync { _ in server.boundAddress?.port } ?? nil)
        try body(port) { h.sync { _ in server.connectionCount } ?? -1 }
        _ = h.sync { _ in server.stop() }
    }

    @Test(arguments: BackendKind.testable)
    func stalledConnectionsDoNotLockARealRequestOut(_ kind: BackendKind) throws {
        try withServer(kind.loopType, maxConnections: 8, idleTimeout: 60_000_000_000) { port, count in
            // Four times the limit, one byte each, never completed.
            var stalled: [Int32] = []
            defer { for fd in stalled { close(fd) } }
            for _ in 0..<32 {
                guard let fd = Self.connect(port) else { Issue.record("connect failed"); return }
                Self.send(fd, "G")
                stalled.append(fd)
            }
            #expect(E2EWait.until(10) { count() == 8 }, "connections: \(count())")
            for round in 0..<3 {
                let fd = try #require(Self.connect(port))
                defer { close(fd) }
                Self.send(fd, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                let reply = String(decoding: Self.readToEOF(fd).bytes, as: UTF8.self)
                #expect(reply.hasPrefix("HTTP/1.1 200 "), "round \(round): \(reply)")
                #expect(reply.contains("{\"ok\":true}"), "round \(round)")
            }
            #expect(count() <= 8)
        }
    }

    @Test(arguments: BackendKind.testable)
    func aTricklingClientIsClosedAtItsRequestDeadline(_ kind: BackendKind) throws {
        try withServer(kind.loopType, maxConnections: 8, idleTimeout: 300_000_000) { port, _ in
            let fd = try #require(Self.connect(port))
            defer { close(fd) }
            // One byte every 50 ms: faster than the 300 ms deadline, so only a
            // deadline that bytes do not extend can end it. Bounded at 600 bytes
            // (30 s), far more than a request line needs.
            let request = Array("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 600)
            var closed = false
            for b in request {
                let n = [b].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { closed = true; break }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 50) > 0 { closed = true; break }
            }
            #expect(closed, "still open after 600 trickled bytes")
            let (bytes, eof) = Self.readToEOF(fd)
            #expect(eof)
            #expect(bytes.isEmpty, "\(String(decoding: bytes, as: UTF8.self))")
        }
    }
}

/// Polls a condition until it holds or `seconds` pass (a bound, not a timing assertion).
enum E2EWait {
    static func until(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}
