import Foundation
import PeregrineTestSupport
import PeregrineIO
import PeregrineSMTP
import Testing
import PeregrineTransport

/// What the drain tests' connections saw (written on the loop thread).
final class DrainRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var _closed = false
    func noteClosed() { lock.lock(); _closed = true; lock.unlock() }
    var closed: Bool { lock.lock(); defer { lock.unlock() }; return _closed }
}

/// Starts the connection's drain (as the daemon's shutdown does) when the
/// client's MAIL arrives, and still accepts that MAIL: the drain applies from
/// the next command on.
final class DrainAtMailPolicy<Loop: EventLoop>: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    static var reply: SMTPReply { SMTPReply(421, "4.3.2", "mx.test service shutting down, closing connection") }
    let deadline: UInt64
    let record: DrainRecord
    weak var connection: SMTPServerConnection<Loop>?
    init(deadline: UInt64, _ record: DrainRecord, _ connection: SMTPServerConnection<Loop>) {
        self.deadline = deadline; self.record = record; self.connection = connection
    }
    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        if case .mailFrom = request { connection?.drain(Self.reply, deadline: deadline) }
        return .accept
    }
    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {}
    func serverConnectionDidClose() { record.noteClosed() }
}

/// `SMTPServerConnection.drain` over real sockets on every backend: the
/// shutdown of the daemon answers a client mid-transaction with 421 4.3.2
/// (at its next command, or at the drain deadline), never a bare EOF.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct SMTPServerConnectionDrainTests {
    func withDrainServer(_ kind: BackendKind, deadline: UInt64, _ body: (UInt16, DrainRecord) throws -> Void) throws {
        let record = DrainRecord()
        func open<L: EventLoop>(_ type: L.Type) throws {
            let server: PeregrineTestServer<L>
            do {
                server = try PeregrineTestServer<L>(.init()) { connection in
                    DrainAtMailPolicy<L>(deadline: deadline, record, connection)
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
    func theNextCommandGets421AndTheConnectionCloses(kind: BackendKind) throws {
        // A deadline far beyond the test's time: only the command can bring the 421.
        try withDrainServer(kind, deadline: 600_000_000_000) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("EHLO c.test\r\n")
            #expect(c.reply()?.hasPrefix("250") == true)
            c.send("MAIL FROM:<a@src.test>\r\n")
            #expect(c.reply()?.hasPrefix("250") == true, "the command that started the drain is still answered")
            c.send("RCPT TO:<b@dst.test>\r\n")
            let reply = c.reply()
            #expect(reply?.hasPrefix("421 4.3.2") == true, "\(String(describing: reply))")
            #expect(c.readToEOF().isEmpty, "nothing after the 421, then EOF")
            #expect(tlsEventually { record.closed })
        }
    }

    @Test(arguments: BackendKind.testable)
    func aSilentClientGets421AtTheDeadline(kind: BackendKind) throws {
        try withDrainServer(kind, deadline: 50_000_000) { port, record in
            let c = try #require(SMTPTestClient(port: port))
            #expect(c.reply()?.hasPrefix("220") == true)
            c.send("EHLO c.test\r\nMAIL FROM:<a@src.test>\r\n")
            #expect(c.reply()?.hasPrefix("250") == true)
            #expect(c.reply()?.hasPrefix("250") == true)
            // Nothing more from the client: the deadline brings the 421.
            let reply = c.reply()
            #expect(reply?.hasPrefix("421 4.3.2") == true, "\(String(describing: reply))")
            #expect(c.readToEOF().isEmpty)
            #expect(tlsEventually { record.closed })
        }
    }
}
