import Foundation
import Glibc
import PeregrineTransport
import PeregrineIO
import PeregrineSMTP
import Testing

// Issue 12 item 1: a client that pipelines megabytes of NOOP and never
// reads its replies. Before the fix the connection read everything and kept
// every reply (47 MB of EHLO took the daemon from 55 to 594 MB RSS). Now the
// session stops at maxPendingOutput, the connection stops reading, the
// client's writes block in its own socket, and the connection is closed once
// no send has completed for the idle timeout. Asserted on memory (the
// connection's own high-water mark of unsent bytes), never on time.
extension SMTPServerConnectionTests {
    @Test(arguments: BackendKind.allCases)
    func aClientThatNeverReadsIsPausedAndClosedWithinTheOutputCeiling(kind: BackendKind) throws {
        try withHookServer(kind, .acceptAll, idleTimeout: 300_000_000) { port, record in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            defer { close(fd) }
            // A small receive window, so the server's sends stall soon.
            var small: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            let addr = try SocketAddress(ip: "127.0.0.1", port: port)
            try #require(addr.withSockAddr { Glibc.connect(fd, $0, $1) } == 0)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let chunk = Array(String(repeating: "NOOP\r\n", count: 10_000).utf8)   // 60 KB
            let goal = 32 << 20                                                      // 32 MB
            var written = 0
            let deadline = Date().addingTimeInterval(60)                              // against hanging only
            writing: while written < goal && Date() < deadline {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n > 0 { written += n; continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    if record.events.contains("closed") { break writing }
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 100)
                    continue
                }
                break // EPIPE / ECONNRESET: the server closed
            }
            #expect(tlsEventually { record.events.contains("closed") }, "connection not closed; \(written) bytes written")
            let unsent = try #require(record.unsent)
            // Paused: what the client managed to write is what the sockets hold
            // plus what the server had read before it stopped, far below 32 MB.
            #expect(written < goal, "the server kept reading: \(written) bytes written")
            #expect(unsent.peak <= unsent.ceiling, "unsent output peaked at \(unsent.peak) B, ceiling \(unsent.ceiling) B")
            #expect(unsent.peak > 0)
            print("never-reading client on \(kind): \(written) bytes written before the close, unsent output peak \(unsent.peak) B (ceiling \(unsent.ceiling) B)")
        }
    }
}
