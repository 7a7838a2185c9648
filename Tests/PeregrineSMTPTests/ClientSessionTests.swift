import Testing
import PeregrineSMTP
import PeregrineIO

/// Drives a client session against canned server replies.
final class ClientHarness {
    let session: SMTPClientSession
    var events: [SMTPClientEvent] = []
    var written = ""
    /// Body to send on `.sendBody`.
    var body = bytes("Subject: t\r\n\r\n.hello\nworld")

    init(pipelining: Bool = true) {
        var c = SMTPClientConfiguration(heloName: "out.example")
        c.usePipelining = pipelining
        session = SMTPClientSession(configuration: c)
        session.start()
        pump()
    }

    func pump() {
        while let e = session.nextEvent() {
            events.append(e)
            if e == .sendBody {
                session.appendBody(body)
                session.finishBody()
            }
        }
        var out = ByteBuffer()
        session.swapOutput(&out)
        written += text(out.readableBytesArray)
    }

    /// Feeds server bytes; returns what the client wrote in response.
    @discardableResult
    func server(_ s: String) -> String {
        written = ""
        session.receive(bytes(s))
        pump()
        return written
    }

    var results: [SMTPMessageResult] {
        events.compactMap { if case .messageCompleted(let r) = $0 { return r }; return nil }
    }
    var closeReason: SMTPClientCloseReason? {
        events.compactMap { if case .closed(let r) = $0 { return r }; return nil }.first
    }
    var timers: [SMTPClientPhase] {
        events.compactMap { if case .setTimer(let p, _) = $0 { return p }; return nil }
    }
}

let ehloFull = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"
let ehloPlain = "250-mx.test\r\n250 8BITMIME\r\n"

@Suite struct ClientSessionTests {
    @Test func pipelinedDeliveryWithMixedRecipientResults() throws {
        let h = ClientHarness()
        #expect(h.timers == [.greeting])
        #expect(h.server("220 mx.test ESMTP\r\n") == "EHLO out.example\r\n")
        #expect(h.server(ehloFull) == "")
        #expect(h.events.contains(.ready(h.session.extensions)))
        #expect(h.session.extensions.pipelining && h.session.extensions.size == 1000000 && h.session.extensions.startTLS)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x.org", recipients: ["a@y", "b@y", "c@y"], size: 42, bodyType: .eightBitMIME))
        h.pump()
        #expect(h.written == "MAIL FROM:<s@x.org> SIZE=42 BODY=8BITMIME\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n")
        let bodyOut = h.server("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n452 4.2.2 over quota\r\n354 go\r\n")
        #expect(bodyOut == "Subject: t\r\n\r\n..hello\r\nworld\r\n.\r\n")
        #expect(h.server("250 2.0.0 queued as X\r\n") == "")
        let r = try #require(h.results.first)
        #expect(r.recipients.map(\.status) == [.delivered, .permanentFailure, .transientFailure])
        #expect(r.recipients[0].reply.description == "250 2.0.0 queued as X")
        #expect(r.recipients[1].reply.enhancedCode?.description == "5.1.1")
        #expect(r.deliveredCount == 1)
        #expect(h.session.isReady)
        #expect(h.timers == [.greeting, .ehlo, .mail, .rcpt, .rcpt, .rcpt, .dataInit, .dataBlock, .dataEnd])
        #expect(h.server("") == "")
        h.session.quit()
        h.pump()
        #expect(h.written == "QUIT\r\n")
        h.server("221 2.0.0 Bye\r\n")
        #expect(h.closeReason == .quit(SMTPReply(221, "2.0.0", "Bye")))
    }

    @Test func unpipelinedDeliveryOneCommandAtATime() throws {
        let h = ClientHarness(pipelining: false)
        h.server("220 hi\r\n")
        h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y", "b@y"]))
        h.pump()
        #expect(h.written == "MAIL FROM:<s@x>\r\n")
        #expect(h.server("250 ok\r\n") == "RCPT TO:<a@y>\r\n")
        #expect(h.server("550 no\r\n") == "RCPT TO:<b@y>\r\n")
        #expect(h.server("250 ok\r\n") == "DATA\r\n")
        #expect(h.server("354 go\r\n").hasSuffix("\r\n.\r\n"))
        h.server("250 ok\r\n")
        let r = try #require(h.results.first)
        #expect(r.recipients.map(\.status) == [.permanentFailure, .delivered])
    }

    @Test func serverWithoutPipeliningIsNotPipelined() {
        let h = ClientHarness()
        h.server("220 hi\r\n")
        h.server(ehloPlain)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"], size: 10))
        h.pump()
        #expect(h.written == "MAIL FROM:<s@x>\r\n")   // no SIZE: not offered
    }

    @Test func heloFallbackAfter5xx() {
        let h = ClientHarness()
        h.server("220 old server\r\n")
        #expect(h.server("502 5.5.1 command not recognized\r\n") == "HELO out.example\r\n")
        h.server("250 old.test\r\n")
        #expect(h.session.isReady)
        #expect(!h.session.extensions.pipelining && !h.session.extensions.isESMTP)
    }

    @Test func greetingRefused() {
        for (wire, reason) in [("421 4.7.0 Too many connections\r\n", SMTPClientCloseReason.serviceClosing(SMTPReply(421, "4.7.0", "Too many connections"))),
                               ("554 5.7.1 [BL21] not accepted\r\n", .greetingRefused(SMTPReply(554, "5.7.1", "[BL21] not accepted")))] {
            let h = ClientHarness()
            h.server(wire)
            #expect(h.closeReason == reason)
            #expect(h.session.isClosed)
            #expect(!reason.isTransient == wire.hasPrefix("554"))
        }
    }

    @Test func mail421EndsSessionWithEveryRecipientDeferred() throws {
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y", "b@y"]))
        h.pump()
        h.server("421 4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred\r\n")
        let r = try #require(h.results.first)
        #expect(r.recipients.allSatisfy { $0.status == .transientFailure && $0.reply.code == 421 && !$0.isLocal })
        #expect(h.closeReason == .serviceClosing(SMTPReply(421, "4.7.0", "[TSS04] Messages from 203.0.113.9 temporarily deferred")))
    }

    @Test func midTransaction421AfterSomeRecipients() throws {
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y", "b@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n421 4.4.5 Server busy\r\n")
        let r = try #require(h.results.first)
        #expect(r.rcptReplies[0]?.code == 250)
        #expect(r.recipients.map(\.status) == [.transientFailure, .transientFailure])
        #expect(r.recipients[1].reply.code == 421)
    }

    @Test func failedTransactionIsFollowedByRsetAndNextMessage() throws {
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        // MAIL refused; RCPT and DATA get 503 in the pipelined group.
        #expect(h.server("451 4.7.650 rate limited (S775)\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n") == "RSET\r\n")
        #expect(h.results.first?.recipients.first?.reply.code == 451)
        h.server("250 2.0.0 Ok\r\n")
        #expect(h.session.isReady)
        // Second message on the same connection succeeds.
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")
        h.server("250 ok\r\n")
        #expect(h.results.count == 2)
        #expect(h.results[1].recipients.first?.status == .delivered)
        // A refused end of data also triggers RSET.
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")
        #expect(h.server("554 5.7.1 spam\r\n") == "RSET\r\n")
        #expect(h.results[2].recipients.first?.status == .permanentFailure)
    }

    @Test func dataAcceptedWithNoValidRecipientsSendsEmptyBody() throws {
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        #expect(h.server("250 ok\r\n550 no\r\n354 go\r\n") == ".\r\n")
        h.server("554 no valid recipients\r\n")
        #expect(h.results.first?.recipients.first?.reply.code == 550)
    }

    @Test func timeoutAndConnectionLossAreTransient() throws {
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloFull)
        h.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        h.pump()
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")
        h.session.timedOut()
        h.pump()
        #expect(h.closeReason == .timedOut(.dataEnd))
        let r = try #require(h.results.first)
        #expect(r.recipients.first?.status == .transientFailure && r.recipients.first?.isLocal == true)

        let h2 = ClientHarness()
        h2.server("220 hi\r\n")
        h2.session.connectionClosed()
        h2.pump()
        #expect(h2.closeReason == .connectionLost)
    }

    @Test func garbageFromServerIsProtocolError() {
        let h = ClientHarness()
        h.server("HTTP/1.1 400 Bad Request\r\n")
        if case .protocolError = h.closeReason {} else { Issue.record("expected protocol error, got \(String(describing: h.closeReason))") }
    }

    /// Issue 12 item 2: a failed session says where it failed and why, so
    /// the daemon can back the receiver off and write the real reason into
    /// the `t` records (bytes only, no socket).
    @Test func failuresSayWhereAndWhy() throws {
        func failed(_ feed: (ClientHarness) -> Void) -> (SMTPClientPhase?, String?) {
            let h = ClientHarness()
            feed(h)
            h.pump()
            return (h.session.failedInPhase, h.session.failureReason)
        }
        let closedEarly = failed { $0.session.connectionClosed() }
        #expect(closedEarly.0 == .greeting)
        #expect(closedEarly.1 == "connection closed by peer before the greeting")
        let closedAfterGreeting = failed { $0.server("220 hi\r\n"); $0.session.connectionClosed() }
        #expect(closedAfterGreeting.0 == .ehlo)
        #expect(closedAfterGreeting.1 == "connection closed by peer while waiting for the EHLO reply")
        let silent = failed { $0.session.timedOut() }
        #expect(silent.0 == .greeting && silent.1 == "timeout waiting for the greeting")
        let garbage = failed { $0.server("\u{1}hello there\r\n") }
        #expect(garbage.0 == .greeting && garbage.1 == "protocol error: malformed reply line '?hello there'")
        let long = failed { $0.server("220 " + String(repeating: "x", count: 9000) + "\r\n") }
        #expect(long.1 == "protocol error: reply line longer than 8192 bytes")

        // Idle and closed by the peer: not a failure of a phase.
        let h = ClientHarness()
        h.server("220 hi\r\n"); h.server(ehloPlain)
        h.session.connectionClosed()
        h.pump()
        #expect(h.closeReason == .connectionLost && h.session.failedInPhase == nil)

        // Abandoned mid-transaction (shutdown deadline): the message completes with the reason.
        let a = ClientHarness()
        a.server("220 hi\r\n"); a.server(ehloPlain)
        a.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y"]))
        a.pump()
        a.session.abandon("delivery interrupted: shutting down")
        a.pump()
        let r = try #require(a.results.first)
        #expect(r.recipients.first?.status == .transientFailure && r.recipients.first?.isLocal == true)
        #expect(r.recipients.first?.reply.lines == ["delivery interrupted: shutting down"])
        #expect(a.session.isClosed && a.session.failedInPhase == .mail)
    }

    /// A full client conversation against a real server session, in memory, many messages.
    @Test func clientAgainstServerSessionInMemory() throws {
        let delegate = RecordingDelegate()
        let server = SMTPServerSession(configuration: SMTPServerConfiguration(hostname: "mx.test"), delegate: delegate)
        let client = ClientHarness()
        client.body = bytes(".dot first\r\nsecond\n.\nthird")
        server.start()
        var pending = 10
        var rounds = 0
        while !client.session.isClosed && rounds < 1000 {
            rounds += 1
            var out = ByteBuffer()
            server.swapOutput(&out)
            client.server(text(out.readableBytesArray))
            if client.session.isReady {
                if pending > 0 {
                    pending -= 1
                    client.session.send(SMTPClientEnvelope(mailFrom: "s@x", recipients: ["a@y", "b@y"]))
                } else {
                    client.session.quit()
                }
                client.pump()
            }
            server.receive(bytes(client.written))
            client.written = ""
        }
        #expect(client.results.count == 10)
        #expect(client.results.allSatisfy { $0.deliveredCount == 2 })
        #expect(delegate.bodies.count == 10)
        #expect(delegate.bodies.first == bytes(".dot first\r\nsecond\r\n.\r\nthird\r\n"))
        #expect(client.closeReason == .quit(SMTPReply(221, "2.0.0", "Bye")))
    }
}
