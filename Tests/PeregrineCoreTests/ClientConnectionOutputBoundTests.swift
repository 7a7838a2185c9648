#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineTestSupport
import PeregrineTransport
import Testing

/// A lying receiver: greets and answers EHLO (PIPELINING) at once, reads the
/// client's commands up to the first DATA, then answers that transaction and
/// `transactions` more in one write (250/250/354/250 each) and never reads
/// again, with a receive buffer of a few KB. Without a guard the early
/// replies would let the client finish message after message while their
/// bodies pile up behind a send the receiver never takes.
private final class EagerNonReadingReceiver: @unchecked Sendable {
    let port: UInt16
    private let listenFD: Int32
    private var connFD: Int32 = -1
    private let lock = NSLock()

    init(ip: String, transactions: Int) throws {
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listenFD >= 0 else { throw ReceiverError("socket: errno \(errno)") }
        var small: Int32 = 4096  // inherited by the accepted socket
        setsockopt(listenFD, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, ip, &sa.sin_addr)
        let fd = listenFD
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 4) == 0 else { throw ReceiverError("bind/listen \(ip): errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        port = UInt16(bigEndian: sa.sin_port)
        let hello = Array("220 eager.test ESMTP\r\n250-eager.test\r\n250 PIPELINING\r\n".utf8)
        var script = ""
        for _ in 0...transactions { script += "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 queued\r\n" }
        let early = Array(script.utf8)
        Thread { [self] in
            let c = accept(fd, nil, nil)
            guard c >= 0 else { return }
            lock.withLock { connFD = c }
            guard hello.withUnsafeBytes({ (try? Posix.writeAll(c, $0)) != nil }) else { return }
            // Read the commands up to the first DATA (the client pipelines MAIL/RCPT/DATA).
            var seen: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            let data = Array("DATA\r\n".utf8)
            while !seen.ends(with: data) {
                let n = chunk.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
                guard n > 0 else { return }
                seen += chunk[0..<n]
            }
            // One write: the client reads these replies in one receive. Never read again.
            _ = early.withUnsafeBytes { (try? Posix.writeAll(c, $0)) != nil }
        }.start()
    }

    func close() {
        lock.withLock { if connFD >= 0 { Glibc.close(connFD); connFD = -1 } }
        shutdown(listenFD, Int32(SHUT_RDWR))
        Glibc.close(listenFD)
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

/// What the client connection went through, read on its loop.
private final class BoundProbe: @unchecked Sendable {
    let lock = NSLock()
    var peak = 0, maxPending = 0, results = 0
    var closed: SMTPClientCloseReason?
}

/// Issue 12 item 1 on the client side: a receiver that answers pipelined
/// transactions early and never reads must not make the client queue body
/// after body. The session handles a whole receive's replies before the
/// connection hears of any, so a reply after the 354 is unexpected: the
/// session ends with a protocol error before any body is queued, and the
/// connection's unsent output never grows past its commands.
@Suite(.serialized, .timeLimit(.minutes(2)), .blockingIO) struct ClientConnectionOutputBoundTests {
    @Test(arguments: BackendKind.testable)
    func earlyRepliesWithoutReadingQueueNoBodies(kind: BackendKind) throws {
        func run<L: EventLoop>(_ type: L.Type) throws {
            let loop: L
            do { loop = try L() } catch {
                if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
                throw error
            }
            let ip = PrivateLoopback.address(165, BackendKind.allCases.firstIndex(of: kind)! + 1)
            let transactions = 200
            let bodySize = 64 * 1024
            let receiver = try EagerNonReadingReceiver(ip: ip, transactions: transactions)
            defer { receiver.close() }
            let finished = DispatchSemaphore(value: 0)
            Thread { loop.run(); finished.signal() }.start()
            defer { loop.stop(); _ = finished.wait(timeout: .now() + 10) }
            let probe = BoundProbe()
            let box = Unchecked(loop)
            let done = DispatchSemaphore(value: 0)
            let address = try SocketAddress(ip: ip, port: receiver.port)
            let body = Array(repeating: UInt8(ascii: "x"), count: bodySize)
            loop.execute {
                let client = SMTPMessageListClient(loop: box.value, configuration: SMTPClientConfiguration(heloName: "bound.test"))
                client.nextMessage = {
                    SMTPOutgoingMessage(envelope: SMTPClientEnvelope(mailFrom: "a@src.test", recipients: ["b@dst.test"]), body: body)
                }
                client.onResult = { _ in probe.lock.withLock { probe.results += 1 } }
                client.onClose = { why in
                    probe.lock.withLock {
                        probe.closed = why
                        probe.peak = client.connection.peakUnsentOutputBytes
                        probe.maxPending = client.connection.maxPendingOutput
                    }
                    done.signal()
                }
                client.connect(to: address, timeout: 10_000_000_000)
            }
            // The session's reply timeouts are minutes: without the guard this wait fails.
            #expect(done.wait(timeout: .now() + 30) == .success, "the connection did not end on the early replies")
            let (peak, maxPending, results, closed) = probe.lock.withLock { (probe.peak, probe.maxPending, probe.results, probe.closed) }
            guard case .protocolError(let why)? = closed else {
                Issue.record("closed with \(String(describing: closed)), not a protocol error")
                return
            }
            #expect(why.contains("unexpected reply"), "closed with \(why)")
            #expect(results <= 1, "\(results) early-answered messages completed")
            // Only commands were ever queued: no body (64 KiB) got behind the stalled receiver.
            #expect(peak < bodySize && peak <= maxPending, "unsent output peaked at \(peak) bytes")
        }
        try run(kind.loopType)
    }
}
