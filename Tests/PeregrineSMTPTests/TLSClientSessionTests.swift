import PeregrineSMTP
import Testing

/// SMTPClientSession's STARTTLS steps (RFC 3207), against canned replies.
@Suite struct TLSClientSessionTests {
    func readyHarness(_ ehlo: String = ehloFull) -> ClientHarness {
        let h = ClientHarness()
        h.server("220 mx.test ESMTP\r\n")
        h.server(ehlo)
        return h
    }

    var startTLSReplies: (ClientHarness) -> [SMTPReply] {
        { h in h.events.compactMap { if case .startTLS(let r) = $0 { return r }; return nil } }
    }

    @Test func startTLSThenEhloAgain() {
        let h = readyHarness()
        #expect(h.session.isReady)
        #expect(h.session.extensions.startTLS)
        #expect(h.session.startTLS())
        h.pump()
        #expect(h.written == "STARTTLS\r\n")
        #expect(h.timers.last == .startTLS)
        #expect(h.server("220 2.0.0 Ready to start TLS\r\n") == "")
        #expect(startTLSReplies(h).map(\.code) == [220])
        #expect(h.timers.last == .startTLS) // the handshake is timed too
        #expect(!h.session.isReady)

        h.session.tlsEstablished()
        h.written = ""
        h.pump()
        #expect(h.written == "EHLO out.example\r\n")
        #expect(h.session.isTLSActive)
        #expect(!h.session.extensions.startTLS) // forgotten until the new EHLO reply
        h.server("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        #expect(h.session.isReady)
        #expect(h.session.extensions.pipelining)
        #expect(!h.session.startTLS()) // once only
    }

    @Test func repliesInjectedAfterThe220AreDropped() {
        let h = readyHarness()
        h.session.startTLS()
        h.pump()
        // A man in the middle appends a fake EHLO reply to the 220 in plain text.
        h.server("220 Ready\r\n250-evil.test\r\n250 AUTH PLAIN\r\n")
        // Plain bytes during the handshake are ignored too.
        h.session.receive(bytes("250 more\r\n"))
        h.session.tlsEstablished()
        h.pump()
        h.server("250-mx.test\r\n250 PIPELINING\r\n")
        #expect(h.session.isReady)
        #expect(h.session.extensions.pipelining)
        #expect(h.session.extensions.authMechanisms.isEmpty)
        #expect(h.closeReason == nil)
    }

    @Test func refusedStartTLSLeavesPlainSessionReady() {
        let h = readyHarness()
        h.session.startTLS()
        h.pump()
        let readyBefore = h.events.filter { if case .ready = $0 { return true }; return false }.count
        h.server("454 4.7.0 TLS not available due to temporary reason\r\n")
        #expect(startTLSReplies(h).map(\.code) == [454])
        let readyAfter = h.events.filter { if case .ready = $0 { return true }; return false }.count
        #expect(readyAfter == readyBefore + 1)
        #expect(h.session.isReady)
        #expect(!h.session.isTLSActive)
    }

    @Test func notOfferedOrNotIdleDoesNothing() {
        let h = readyHarness(ehloPlain)
        #expect(!h.session.startTLS())
        h.pump()
        #expect(h.written == "")
        let early = ClientHarness()
        #expect(!early.session.startTLS())
    }

    @Test func handshakeTimeoutAndFailureEndTheSession() {
        let h = readyHarness()
        h.session.startTLS()
        h.server("220 Ready\r\n")
        h.session.timedOut()
        h.pump()
        #expect(h.closeReason == .timedOut(.startTLS))

        let f = readyHarness()
        f.session.startTLS()
        f.server("220 Ready\r\n")
        f.session.tlsFailed("no shared cipher")
        f.pump()
        guard case .protocolError(let why) = f.closeReason else { Issue.record("\(String(describing: f.closeReason))"); return }
        #expect(why.contains("no shared cipher"))
        #expect(f.closeReason?.isTransient == true)
    }

    @Test func serviceClosingInsteadOf220() {
        let h = readyHarness()
        h.session.startTLS()
        h.server("421 4.3.2 Shutting down\r\n")
        #expect(h.closeReason == .serviceClosing(SMTPReply(421, "4.3.2", "Shutting down")))
    }
}
