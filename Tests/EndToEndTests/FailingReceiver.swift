#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// A receiver that fails every session the same way, in Python
/// (socketserver, one thread per connection), for the reconnect-storm tests:
/// it counts every connection it accepts (one line per connection in a file,
/// written before it answers anything) so a test can bound how many a
/// failing destination got.
final class FailingReceiver {
    enum Mode: String, CaseIterable, CustomStringConvertible {
        /// Greets, then closes at once.
        case greetAndClose = "greet-and-close"
        /// Sends bytes that are not an SMTP reply.
        case garbage
        /// Sends a greeting line far longer than the client's reply-line limit.
        case overlongLine = "overlong-line"
        /// Greets with a code no greeting may have (354).
        case badCode = "bad-code"
        /// Accepts and says nothing (the client's greeting timeout ends it).
        case silent
        /// Greets, accepts EHLO, then answers the first transaction with 421 and closes.
        case refuseMail = "refuse-mail"
        /// Not a failure mode of its own: accepts one message per connection,
        /// then answers the next MAIL with 421 (smtp-421-means-mx-unavailable).
        static var failing: [Mode] { allCases.filter { $0 != .acceptOne && $0 != .stopReading && $0 != .greet554 && $0 != .closeInBody } }
        case acceptOne = "accept-one"
        /// Not a failure mode of its own either: greets, accepts the envelope,
        /// answers DATA with 354, then never reads again (its receive buffer is
        /// a few KB), so a large body stalls in the client's send (the
        /// client-side output bound, issue 12 item 1).
        case stopReading = "stop-reading"
        /// Greets with 554 5.7.1 (a receiver refusing service; bounce-upon-5xx-greeting).
        case greet554 = "greet-554"
        /// Not a failure mode of its own: answers DATA with 354, reads 8 KB
        /// of the body and closes (a receiver dying mid-body).
        case closeInBody = "close-in-body"
        var description: String { rawValue }
    }

    let ip: String
    var port: UInt16 { server.port }
    let countPath: String
    private let server: PythonServerProcess

    static let script = #"""
    import socketserver, sys, threading
    ip, port, mode, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            with lock:
                with open(log, "a") as f:
                    f.write("connection\n")
            s.settimeout(60)
            try:
                if mode == "greet-and-close":
                    s.sendall(b"220 failing.test ESMTP\r\n")
                    return
                if mode == "garbage":
                    s.sendall(b"\x16\x03\x01 this is not SMTP at all\r\n")
                elif mode == "overlong-line":
                    s.sendall(b"220 " + b"x" * 20000 + b"\r\n")
                elif mode == "greet-554":
                    s.sendall(b"554 5.7.1 no service for you\r\n")
                elif mode == "bad-code":
                    s.sendall(b"354 go ahead\r\n")
                elif mode == "accept-one":
                    s.sendall(b"220 failing.test ESMTP\r\n")
                    pending, in_data, accepted = b"", False, 0
                    while True:
                        data = s.recv(4096)
                        if not data:
                            return
                        pending += data
                        while b"\r\n" in pending:
                            line, pending = pending.split(b"\r\n", 1)
                            verb = line[:4].upper()
                            if in_data:
                                if line == b".":
                                    in_data, accepted = False, accepted + 1
                                    s.sendall(b"250 2.0.0 queued\r\n")
                            elif verb in (b"EHLO", b"HELO"):
                                s.sendall(b"250 failing.test\r\n")
                            elif verb == b"MAIL" and accepted > 0:
                                s.sendall(b"421 4.7.0 too many messages, closing\r\n")
                                return
                            elif verb == b"DATA":
                                in_data = True
                                s.sendall(b"354 go ahead\r\n")
                            elif verb == b"QUIT":
                                s.sendall(b"221 bye\r\n")
                                return
                            else:
                                s.sendall(b"250 ok\r\n")
                elif mode == "stop-reading":
                    s.sendall(b"220 failing.test ESMTP\r\n")
                    pending = b""
                    while True:
                        data = s.recv(4096)
                        if not data:
                            return
                        pending += data
                        while b"\r\n" in pending:
                            line, pending = pending.split(b"\r\n", 1)
                            verb = line[:4].upper()
                            if verb in (b"EHLO", b"HELO"):
                                s.sendall(b"250 failing.test\r\n")
                            elif verb == b"DATA":
                                s.sendall(b"354 go ahead\r\n")
                                threading.Event().wait()   # never reads again
                            else:
                                s.sendall(b"250 ok\r\n")
                elif mode == "close-in-body":
                    s.sendall(b"220 failing.test ESMTP\r\n")
                    pending = b""
                    while True:
                        data = s.recv(4096)
                        if not data:
                            return
                        pending += data
                        while b"\r\n" in pending:
                            line, pending = pending.split(b"\r\n", 1)
                            verb = line[:4].upper()
                            if verb in (b"EHLO", b"HELO"):
                                s.sendall(b"250 failing.test\r\n")
                            elif verb == b"DATA":
                                s.sendall(b"354 go ahead\r\n")
                                got = len(pending)
                                while got < 8192:
                                    more = s.recv(8192 - got)
                                    if not more:
                                        return
                                    got += len(more)
                                s.close()
                                return
                            else:
                                s.sendall(b"250 ok\r\n")
                elif mode == "refuse-mail":
                    s.sendall(b"220 failing.test ESMTP\r\n")
                    pending = b""
                    while True:
                        data = s.recv(4096)
                        if not data:
                            return
                        pending += data
                        while b"\r\n" in pending:
                            line, pending = pending.split(b"\r\n", 1)
                            if line[:4].upper() in (b"EHLO", b"HELO"):
                                s.sendall(b"250 failing.test\r\n")
                            else:
                                s.sendall(b"421 4.3.2 try again later\r\n")
                                return
                while s.recv(4096):
                    pass
            except OSError:
                pass

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 128
        def server_bind(self):
            if mode == "stop-reading":
                # Accepted sockets inherit it: the window closes after a few KB.
                import socket
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            super().server_bind()

    server = Server((ip, port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    /// Starts on `ip` (port 0: the kernel picks, and the receiver reports it).
    init(_ dir: TestDirectory, ip: String, port: UInt16 = 0, mode: Mode, tag: String = "receiver") throws {
        self.ip = ip
        countPath = dir.file("\(tag)-connections.txt")
        FileManager.default.createFile(atPath: countPath, contents: nil)
        server = try PythonServerProcess(dir, tag: tag, script: Self.script, arguments: [ip, "\(port)", mode.rawValue, countPath],
                                         what: "failing receiver on \(ip):\(port)")
    }

    /// Connections accepted so far.
    var connections: Int {
        let text = (try? String(contentsOfFile: countPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").count
    }

    func terminate() { server.terminate() }
}
