#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineTestSupport
import PeregrineTransport
import Testing

/// A receiver that answers everything at once and never reads: the greeting,
/// EHLO (PIPELINING) and `transactions` × MAIL/RCPT/DATA/end-of-data replies,
/// written as soon as the client connects, with a receive buffer of a few KB.
/// Early replies let the client finish message after message while its
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
        var script = "220 eager.test ESMTP\r\n250-eager.test\r\n250 PIPELINING\r\n"
        for _ in 0..<transactions { script += "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 queued\r\n" }
        let bytes = Array(script.utf8)
        Thread { [self] in
            let c = accept(fd, nil, nil)
            guard c >= 0 else { return }
            lock.withLock { connFD = c }
            // The replies fit in the socket buffers; the client's bytes are never read.
            _ = bytes.withUnsafeBytes { buf in (try? Posix.writeAll(c, buf)) != nil }
        }.start()
    }

    func close() {
        lock.withLock { if connFD >= 0 { Glibc.close(connFD); connFD = -1 } }
        shutdown(listenFD, Int32(SHUT_RDWR))
        Glibc.close(listenFD)
    }
}

/// What the client connection held, read on its loop.
private final class BoundProbe: @unchecked Sendable {
    let lock = NSLock()
    var peak = 0, ceiling = 0, results = 0, holdingBack = false
}

/// Issue 12 item 1 on the client side: a receiver that answers every
/// pipelined transaction early and never reads must not make the client
/// queue body after body (before the bound, `SMTPClientConnection` held every
/// message a receive's replies completed: here 25 MB).
@Suite(.serialized, .timeLimit(.minutes(2)), .blockingIO) struct ClientConnectionOutputBoundTests {
    @Test(arguments: BackendKind.testable)
    func earlyRepliesWithoutReadingKeepUnsentOutputBounded(kind: BackendKind) throws {
        func run<L: EventLoop>(_ type: L.Type) throws {
            let loop: L
            do { loop = try L() } catch {
                if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
                throw error
            }
            let ip = PrivateLoopback.address(165, BackendKind.allCases.firstIndex(of: kind)! + 1)
            let transactions = 400
            let bodySize = 64 * 1024
            let receiver = try EagerNonReadingReceiver(ip: ip, transactions: transactions)
            defer { receiver.close() }
            let finished = DispatchSemaphore(value: 0)
            Thread { loop.run(); finished.signal() }.start()
            defer { loop.stop(); _ = finished.wait(timeout: .now() + 10) }
            let probe = BoundProbe()
            let box = Unchecked(loop)
            let clientBox = Unchecked<SMTPMessageListClient<L>?>(nil)
            let address = try SocketAddress(ip: ip, port: receiver.port)
            let body = Array(repeating: UInt8(ascii: "x"), count: bodySize)
            loop.execute {
                let client = SMTPMessageListClient(loop: box.value, configuration: SMTPClientConfiguration(heloName: "bound.test"))
                clientBox.value = client
                client.nextMessage = {
                    SMTPOutgoingMessage(envelope: SMTPClientEnvelope(mailFrom: "a@src.test", recipients: ["b@dst.test"]), body: body)
                }
                client.onResult = { _ in probe.lock.withLock { probe.results += 1 } }
                client.connect(to: address, timeout: 10_000_000_000)
            }
            // Wait (bounded) until the connection holds back: the send stalled and the output reached its bound.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let sample = DispatchSemaphore(value: 0)
                loop.execute {
                    if let c = clientBox.value?.connection {
                        probe.lock.withLock {
                            probe.peak = c.peakUnsentOutputBytes
                            probe.ceiling = 2 * (c.maxPendingOutput + 2 * bodySize + 4096)
                            probe.holdingBack = c.isHoldingBack
                        }
                    }
                    sample.signal()
                }
                _ = sample.wait(timeout: .now() + 10)
                if probe.lock.withLock({ probe.holdingBack }) { break }
                usleep(20_000)  // polling interval of a bounded wait, not a synchronisation sleep
            }
            let done = DispatchSemaphore(value: 0)
            loop.execute {
                clientBox.value?.onClose = { _ in done.signal() }
                clientBox.value?.connection.abandon("test over")
            }
            #expect(done.wait(timeout: .now() + 20) == .success, "the abandoned connection did not finish")
            let (peak, ceiling, results, holding) = probe.lock.withLock { (probe.peak, probe.ceiling, probe.results, probe.holdingBack) }
            #expect(holding, "the connection never held back (results: \(results))")
            #expect(peak <= ceiling, "unsent output peaked at \(peak) bytes, ceiling \(ceiling)")
            #expect(results < transactions, "every early-answered message was queued")
        }
        try run(kind.loopType)
    }
}
