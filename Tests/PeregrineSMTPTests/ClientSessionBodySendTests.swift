import Testing
import PeregrineSMTP
import PeregrineIO

/// data-send-timeout times the body's send (issue 12, item 1, client side):
/// the owner says when the socket has not taken the body yet, and a timeout
/// then is reported as one sending the body, not as a wait for the reply.
@Suite struct ClientSessionBodySendTests {
    /// A harness whose owner reports the body as not yet on the socket.
    static func inBody() -> ClientHarness {
        let h = ClientHarness()
        h.server("220 mx.test ESMTP\r\n")
        h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")   // body and end marker written: state dataEnd
        h.events.removeAll()
        h.session.bodyAwaitsSocket()
        h.pump()
        return h
    }

    @Test func theSendIsTimedByTheDataBlockTimeout() {
        let h = Self.inBody()
        #expect(h.session.isBodyAwaitingSocket)
        #expect(h.timers == [.dataBlock])
        h.session.bodyHandedToSocket()
        h.pump()
        #expect(!h.session.isBodyAwaitingSocket)
        #expect(h.timers == [.dataBlock, .dataEnd], "the reply wait starts once the socket took the body")
    }

    @Test func aTimeoutWhileTheBodyWaitsForTheSocketIsADataSendTimeout() throws {
        let h = Self.inBody()
        h.session.timedOut()
        h.pump()
        #expect(h.closeReason == .timedOut(.dataBlock))
        #expect(h.session.failedInPhase == .dataBlock)
        let r = try #require(h.results.first)
        #expect(r.recipients.map(\.status) == [.transientFailure])
        #expect(r.recipients[0].reply.description.contains("timeout waiting for the message body to be sent"),
                "\(r.recipients[0].reply)")
    }

    @Test func anEarlyReplyEndsTheWaitAndALateHandOverChangesNothing() throws {
        let h = Self.inBody()
        h.server("554 5.7.1 go away\r\n")
        #expect(!h.session.isBodyAwaitingSocket)
        let r = try #require(h.results.first)
        #expect(r.recipients.map(\.status) == [.permanentFailure])
        h.events.removeAll()
        h.session.bodyHandedToSocket()
        h.pump()
        #expect(!h.timers.contains(.dataEnd), "\(h.events)")
    }

    @Test func withoutTheCallTheBodyIsTimedAsBefore() {
        let h = ClientHarness()
        h.server("220 mx.test ESMTP\r\n")
        h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")
        #expect(h.timers.suffix(2) == [.dataBlock, .dataEnd])
        h.session.timedOut()
        h.pump()
        #expect(h.closeReason == .timedOut(.dataEnd))
    }
}
