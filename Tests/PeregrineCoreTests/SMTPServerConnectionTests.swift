import Foundation
import PeregrineTestSupport
import PeregrineIO
import PeregrineSMTP
import Testing
import PeregrineTLS
import PeregrineTransport

// The hooks of SMTPServerConnection that the sink's per-ISP policy and the
// daemon's injection handler rely on, over real loopback sockets on every
// backend: a close from inside a body callback, close after the next reply,
// the idle timeout, a refused TLS handshake.

/// What a connection's policy saw (written on the loop thread, read by the test).
final class ConnectionHookRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var _events: [String] = []
    func note(_ e: String) { lock.lock(); _events.append(e); lock.unlock() }
    var events: [String] { lock.lock(); defer { lock.unlock() }; return _events }
    /// The connection's `peakUnsentOutputBytes` and `unsentOutputCeiling` when it closed.
    private var _unsent: (peak: Int, ceiling: Int)?
    func noteUnsent(peak: Int, ceiling: Int) { lock.lock(); _unsent = (peak, ceiling); lock.unlock() }
    var unsent: (peak: Int, ceiling: Int)? { lock.lock(); defer { lock.unlock() }; return _unsent }
}

/// What a `HookPolicy` does.
enum HookMode { case acceptAll, closeInBody, refuseRcptAndClose, idle, refuseTLS }

/// A policy whose behaviour each test picks.
final class HookPolicy<Loop: EventLoop>: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    let mode: HookMode
    let record: ConnectionHookRecord
    weak var connection: SMTPServerConnection<Loop>?
    init(_ mode: HookMode, _ record: ConnectionHookRecord, _ connection: SMTPServerConnection<Loop>) {
        self.mode = mode; self.record = record; self.connection = connection
    }

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        switch request {
        case .rcptTo where mode == .refuseRcptAndClose:
            connection?.closeAfterNextReply()
            return .reply(SMTPReply(421, "4.7.0", "try again later"))
        case .endOfData:
            record.note("endOfData")
        default: break
        }
        return .accept
    }

    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        if mode == .closeInBody { connection?.close() }
    }

    func serverConnectionWillStartTLS() -> SMTPServerTLSStart {
        mode == .refuseTLS ? .answerInPlaintext(Array("421 4.7.0 no TLS here\r\n".utf8)) : .handshake
    }
    func serverConnectionDidEndTLSHandshake(_ tls: TLSConnection?) { record.note(tls == nil ? "tls failed" : "tls ok") }
    func serverConnectionWillTimeOut() { record.note("timeout") }
    func serverConnectionDidClose() {
        if let c = connection { record.noteUnsent(peak: c.peakUnsentOutputBytes, ceiling: c.unsentOutputCeiling) }
        record.note("closed")
    }
}

@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct SMTPServerConnectionTests {
    /// Runs `body` against a test server whose connections use `mode` (a backend that cannot start here is skipped).
    func withHookServer(_ kind: BackendKind, _ mode: HookMode, idleTimeout: UInt64? = nil,
                        _ body: (UInt16, ConnectionHookRecord) throws -> Void) throws {
        let record = ConnectionHookRecord()
        func open<L: EventLoop>(_ type: L.Type) throws {
            var options = PeregrineTestServer<L>.Options()
            options.idleTimeout = idleTimeout
            if mode == .refuseTLS {
                options.configuration.startTLSEnabled = true
                options.tlsContext = try TLSTestCertificates.serverContext()
            }
            let server: PeregrineTestServer<L>
            do {
                server = try PeregrineTestServer<L>(options) { connection in
                    HookPolicy<L>(mode, record, connection)
                }
            } catch let e as IOError {
                if case .unsupported = e.kind { try Skip.because("the \(L.kind) backend cannot start here: \(e)") }
                throw e
            }
            defer { server.stop() }
            try #require(server.port != 0)
            try body(server.port, record)
        }
        try open(kind.loopType)
    }

    @Test(arguments: BackendKind.testable)
    func aReplyBatchLargerThanTheSendMemoryGoesOutWhole(kind: BackendKind) throws {
        // 3000 pipelined NOOPs in one write: about 40 KB of replies, more than
        // the connection's 16 KB send memory, so the batch goes out in parts.
        try withHookServer(kind, .acceptAll) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send(String(repeating: "NOOP\r\n", count: 3000) + "QUIT\r\n")
            var noops = 0
            while let r = c.reply(), r.hasPrefix("250") { noops += 1 }
            #expect(noops == 3000)
            #expect(c.readToEOF().isEmpty)
            #expect(tlsEventually { record.events == ["closed"] })
        }
    }

    @Test(arguments: BackendKind.testable)
    func closeInsideABodyCallbackSendsNothingMore(kind: BackendKind) throws {
        try withHookServer(kind, .closeInBody) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("EHLO c.test\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<b@dst.test>\r\nDATA\r\n")
            #expect(c.reply()?.hasPrefix("250") == true)
            #expect(c.reply()?.hasPrefix("250") == true)
            #expect(c.reply()?.hasPrefix("250") == true)
            #expect(c.reply()?.hasPrefix("354") == true)
            // Body and end of data in one packet: the session parses all of it
            // within the callback's batch, yet no reply may follow the close.
            c.send("Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
            #expect(c.readToEOF().isEmpty)
            #expect(tlsEventually { record.events.contains("closed") })
            #expect(record.events.filter { $0 == "closed" }.count == 1)
        }
    }

    @Test(arguments: BackendKind.testable)
    func closeAfterNextReplySendsThatReplyThenCloses(kind: BackendKind) throws {
        try withHookServer(kind, .refuseRcptAndClose) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("EHLO c.test\r\n")
            #expect(c.reply()?.hasPrefix("250") == true)
            c.send("MAIL FROM:<a@src.test>\r\n")
            #expect(c.reply()?.hasPrefix("250") == true)
            c.send("RCPT TO:<b@dst.test>\r\n")
            #expect(c.reply() == "421 4.7.0 try again later")
            #expect(c.readToEOF().isEmpty)
            #expect(tlsEventually { record.events == ["closed"] })
        }
    }

    @Test(arguments: BackendKind.testable)
    func idleTimeoutCallsTheHandlerThenSends421(kind: BackendKind) throws {
        try withHookServer(kind, .idle, idleTimeout: 200_000_000) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            let last = c.reply()
            #expect(last?.hasPrefix("421 4.4.2") == true, "\(String(describing: last))")
            #expect(c.readToEOF().isEmpty)
            #expect(tlsEventually { record.events == ["timeout", "closed"] })
        }
    }

    @Test(arguments: BackendKind.testable)
    func refusedTLSAnswersThePlainBytesThenCloses(kind: BackendKind) throws {
        try withHookServer(kind, .refuseTLS) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("EHLO c.test\r\n")
            #expect(c.reply()?.contains("STARTTLS") == true)
            c.send("STARTTLS\r\n")
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("\u{16}\u{03}\u{01}not really a ClientHello")
            #expect(String(decoding: c.readToEOF(), as: UTF8.self) == "421 4.7.0 no TLS here\r\n")
            #expect(tlsEventually { record.events == ["tls failed", "closed"] })
        }
    }
}
