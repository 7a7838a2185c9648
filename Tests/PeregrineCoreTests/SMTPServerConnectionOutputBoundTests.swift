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
    @Test(arguments: BackendKind.testable)
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

/// The same over TLS (implicit, port-465 style), from Python's ssl module:
/// replies are encrypted only once OpenSSL's ciphertext is down to one send,
/// so the BIO cannot grow behind the session's back.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct SMTPServerConnectionTLSOutputBoundTests {
    static let client = """
    import socket, ssl, sys, time, select
    port = int(sys.argv[1])
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(raw)
    s.setblocking(False)
    chunk = b"NOOP\\r\\n" * 10000
    written, goal, start = 0, 32 << 20, time.time()
    while written < goal and time.time() - start < 60:
        try:
            written += s.send(chunk)
        except (ssl.SSLWantWriteError, BlockingIOError):
            select.select([], [s], [], 0.2)
        except ssl.SSLWantReadError:
            select.select([s], [], [], 0.2)
        except OSError:
            break
    print(written)
    """

    @Test(arguments: BackendKind.testable)
    func aTLSClientThatNeverReadsStaysWithinTheCeiling(kind: BackendKind) throws {
        let python = try #require(findExecutable("python3"), "python3 is missing")
        let record = ConnectionHookRecord()
        func run<L: EventLoop>(_ type: L.Type) throws {
            var options = PeregrineTestServer<L>.Options()
            options.tlsContext = try TLSTestCertificates.serverContext()
            options.implicitTLS = true
            options.idleTimeout = 300_000_000
            let server = try PeregrineTestServer<L>(options) { connection in HookPolicy<L>(.acceptAll, record, connection) }
            defer { server.stop() }
            try #require(server.port != 0)
            let (rc, out) = try runProcess(python, ["-c", Self.client, "\(server.port)"])
            #expect(rc == 0)
            let written = Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            #expect(tlsEventually { record.events.contains("closed") }, "not closed; \(written) bytes written")
            let unsent = try #require(record.unsent)
            print("never-reading TLS client on \(kind): \(written) bytes written, unsent output peak \(unsent.peak) B (ceiling \(unsent.ceiling) B)")
            #expect(written > 0 && written < 32 << 20, "\(written) bytes written")
            #expect(unsent.peak <= unsent.ceiling, "unsent output peaked at \(unsent.peak) B, ceiling \(unsent.ceiling) B")
        }
        try run(kind.loopType)
    }
}
