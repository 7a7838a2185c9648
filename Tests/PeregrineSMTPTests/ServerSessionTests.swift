import PeregrineIO
import Testing
import PeregrineSMTP

@Suite struct ServerSessionTests {
    @Test func greetingAndEhloAdvertiseExtensions() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.authEnabled = true
        c.allowUnencryptedAuth = true
        c.startTLSEnabled = true
        c.maxMessageSize = 1000
        let h = ServerHarness(c)
        #expect(h.greeting == "220 mx.test ESMTP Peregrine\r\n")
        let out = h.send("EHLO client.example\r\n")
        #expect(out == "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
        #expect(h.session.helo == SMTPHelo(domain: "client.example", isExtended: true))
        #expect(h.send("HELO x\r\n") == "250 mx.test\r\n")
    }

    /// XVERP is in the EHLO reply only when the owner offers it (Postfix's
    /// smtpd_authorized_verp_clients; the daemon: sources that relay or VERP by default).
    @Test func xverpIsAdvertisedOnlyWhenOffered() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxMessageSize = 1000
        #expect(!ServerHarness(c).send("EHLO a\r\n").contains("XVERP"))
        c.advertiseXVERP = true
        let h = ServerHarness(c)
        #expect(h.send("EHLO a\r\n") == "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 XVERP\r\n")
        #expect(h.send("HELO a\r\n") == "250 mx.test\r\n")
    }

    @Test func greetingPolicyCanRefuse() {
        let h421 = ServerHarness(decide: { r in r == .connection ? .reply(SMTPReply(421, "4.7.0", "Too many connections")) : .accept })
        #expect(h421.greeting == "421 4.7.0 Too many connections\r\n")
        #expect(h421.session.isClosed)

        let h554 = ServerHarness(decide: { r in r == .connection ? .reply(SMTPReply(554, "5.7.1", "No service")) : .accept })
        #expect(h554.greeting == "554 5.7.1 No service\r\n")
        #expect(codes(h554.send("EHLO x\r\nMAIL FROM:<a@b>\r\nbogus\r\n")) == [503, 503, 503])
        #expect(codes(h554.send("QUIT\r\n")) == [221])
        #expect(h554.session.isClosed)
    }

    @Test func fullTransactionPipelinedInOneBatch() {
        let h = ServerHarness()
        let out = h.send("EHLO c\r\nMAIL FROM:<s@x.org> SIZE=100 BODY=8BITMIME ENVID=a+2Bb RET=HDRS\r\nRCPT TO:<r1@y.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1+40y.org\r\nRCPT TO:<r2@y.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        #expect(codes(out) == [250, 250, 250, 250, 354, 250, 221])
        #expect(out.contains("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data"))
        #expect(h.delegate.bodies == [bytes("Subject: hi\r\n\r\n.dot\r\n")])
        #expect(h.session.isClosed)
        let mail = h.delegate.requests.compactMap { r -> SMTPMailFrom? in if case .mailFrom(let m) = r { return m }; return nil }
        #expect(mail == [SMTPMailFrom(reversePath: "s@x.org", size: 100, body: .eightBitMIME, envelopeID: "a+b", ret: .headers)])
        let rcpts = h.delegate.requests.compactMap { r -> SMTPRcptTo? in if case .rcptTo(let m) = r { return m }; return nil }
        #expect(rcpts.first?.notify == [.success, .failure])
        #expect(rcpts.first?.originalRecipient == .init(addressType: "rfc822", address: "r1@y.org"))
        #expect(rcpts.count == 2)
    }

    /// The same pipelined transaction split at every byte boundary gives identical replies and body.
    @Test func pipelinedBatchSplitAtEveryByte() {
        let script = bytes("EHLO c\r\nMAIL FROM:<s@x.org>\r\nRCPT TO:<r@y.org>\r\nRCPT TO:<bad>\r\nDATA\r\nline1\r\n.stuffed\r\nbare\nlf\r\n\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n")
        let reference = ServerHarness()
        let refOut = reference.send(script)
        let refBodies = reference.delegate.bodies
        #expect(codes(refOut) == [250, 250, 250, 250, 354, 250, 250, 250, 221])
        #expect(refBodies == [bytes("line1\r\nstuffed\r\nbare\nlf\r\n\r\n")])
        for i in 0...script.count {
            let h = ServerHarness()
            var out = h.send(Array(script[..<i]))
            out += h.send(Array(script[i...]))
            #expect(out == refOut, "split at \(i)")
            #expect(h.delegate.bodies == refBodies, "split at \(i)")
        }
    }

    @Test func flushOncePerBatch() {
        let h = ServerHarness()
        let a = h.session.receive(bytes("EHLO c\r\nNOOP\r\nNOOP\r\n"))
        #expect(a.shouldFlush && !a.shouldClose)
        #expect(codes(h.takeOutput()) == [250, 250, 250])
        let b = h.session.receive(bytes("NOO"))
        #expect(!b.shouldFlush)
    }

    @Test func asynchronousDecisionsPausePipelinedInput() {
        let h = ServerHarness(decide: { r in
            switch r { case .mailFrom, .endOfData: return .pending; default: return .accept }
        })
        #expect(codes(h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")) == [250])
        #expect(h.session.isAwaitingDecision)
        #expect(h.session.bufferedInputBytes > 0)
        let a = h.session.decide(.reply(SMTPReply(451, "4.7.650", "rate limited")))
        #expect(a.shouldFlush)
        #expect(codes(h.takeOutput()) == [451, 503, 503])
        // Now a transaction whose end of data waits for the spool.
        #expect(codes(h.send("MAIL FROM:<a@b>\r\n")) == [])
        h.session.decide(.accept)
        #expect(codes(h.send("RCPT TO:<c@d>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n")) == [250, 250, 354])
        #expect(h.session.isAwaitingDecision)
        #expect(!h.session.isClosed)
        let done = h.session.completeMessage()
        #expect(done.shouldClose)
        #expect(h.takeOutput() == "250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n")
        #expect(h.delegate.bodies == [bytes("body\r\n")])
    }

    @Test func decisionRepliesPerPhase() {
        let h = ServerHarness(decide: { r in
            switch r {
            case .helo(let x) where x.domain == "bad": return .reply(SMTPReply(550, "5.7.1", "go away"))
            case .rcptTo(let x) where x.forwardPath.hasPrefix("full"): return .reply(SMTPReply(452, "4.2.2", "over quota"))
            case .rcptTo(let x) where x.forwardPath.hasPrefix("none"): return .reply(SMTPReply(550, "5.1.1", "no such user"))
            case .endOfData: return .reply(SMTPReply(554, "5.7.1", "spam"))
            default: return .accept
            }
        })
        #expect(codes(h.send("EHLO bad\r\nMAIL FROM:<a@b>\r\n")) == [550, 503])
        let out = h.send("EHLO good\r\nMAIL FROM:<a@b>\r\nRCPT TO:<full@x>\r\nRCPT TO:<none@x>\r\nRCPT TO:<ok@x>\r\nDATA\r\nx\r\n.\r\n")
        #expect(codes(out) == [250, 250, 452, 550, 250, 354, 554])
        #expect(h.session.transaction.mailFrom == nil)
    }

    @Test func ownerReply421Closes() {
        let h = ServerHarness(decide: { r in
            if case .mailFrom = r { return .reply(SMTPReply(421, "4.7.0", "[TSS04] Messages temporarily deferred")) }
            return .accept
        })
        let a = h.session.receive(bytes("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"))
        #expect(a.shouldClose)
        #expect(codes(h.takeOutput()) == [250, 421])
    }

    @Test func outOfSequenceCommands() {
        let h = ServerHarness()
        #expect(h.send("MAIL FROM:<a@b>\r\n") == "503 5.5.1 Error: send HELO/EHLO first\r\n")
        #expect(codes(h.send("RCPT TO:<a@b>\r\nDATA\r\n")) == [503, 503])
        #expect(codes(h.send("EHLO c\r\nDATA\r\nRCPT TO:<a@b>\r\n")) == [250, 503, 503])
        #expect(codes(h.send("MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nDATA\r\n")) == [250, 503, 503])
        #expect(h.send("RSET\r\n") == "250 2.0.0 Ok\r\n")
    }

    @Test func noValidRecipientsGets554AtData() {
        let h = ServerHarness(decide: { r in if case .rcptTo = r { return .reply(SMTPReply(550, "5.1.1", "unknown")) }; return .accept })
        #expect(codes(h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nbody\r\n.\r\n")) == [250, 250, 550, 554, 500, 500])
    }

    @Test func syntaxErrors() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxErrors = 50
        let h = ServerHarness(c)
        h.send("EHLO c\r\n")
        #expect(h.send("EHLO\r\n") == "501 5.5.4 Syntax: EHLO domain or address-literal\r\n")
        #expect(h.send("MAIL TO:<a@b>\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("MAIL FROM:<a b@c>\r\n").hasPrefix("501 5.1.7"))
        #expect(h.send("MAIL FROM:<a@b\r\n").hasPrefix("501 5.1.7"))
        #expect(h.send("MAIL FROM:<a@b> SIZE=abc\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("MAIL FROM:<a@b> BODY=9BIT\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("MAIL FROM:<a@b> ENVID=a+zz\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("MAIL FROM:<a@b> FOO=bar\r\n").hasPrefix("555 5.5.4"))
        #expect(h.send("MAIL FROM:<> \r\n").hasPrefix("250 2.1.0"))
        #expect(h.send("RCPT TO:<>\r\n").hasPrefix("501 5.1.3"))
        #expect(h.send("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("RCPT TO:<a@b> ORCPT=rfc822\r\n").hasPrefix("501 5.5.4"))
        #expect(h.send("DATA now\r\n").hasPrefix("501 5.5.4"))
    }

    @Test func miscCommands() {
        let h = ServerHarness()
        #expect(h.send("NOOP\r\n") == "250 2.0.0 Ok\r\n")
        #expect(h.send("VRFY postmaster\r\n").hasPrefix("252 2.5.0"))
        #expect(h.send("HELP\r\n").hasPrefix("214 2.0.0"))
        #expect(h.send("EXPN list\r\n").hasPrefix("502 5.5.1"))
        #expect(h.send("BDAT 10 LAST\r\n").hasPrefix("502 5.5.1"))
        #expect(h.send("FROB\r\n") == "500 5.5.1 Command unrecognized\r\n")
        #expect(h.send("\r\n").hasPrefix("500 5.5.2"))
        #expect(h.send("STARTTLS\r\n").hasPrefix("502 5.5.1"))
        #expect(h.send("AUTH PLAIN\r\n").hasPrefix("502 5.5.1"))
        #expect(h.send("ehlo lower\r\nmail from:<a@b>\r\n") == h.send("") + "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n250 2.1.0 Ok\r\n")
    }

    @Test func overlongCommandLineIsRefusedAndRestDiscarded() {
        let h = ServerHarness()
        let long = "NOOP " + String(repeating: "x", count: 600) + "\r\nNOOP\r\n"
        #expect(h.send(long) == "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n")
        // The same split into small pieces: one 500, then the next command works.
        let h2 = ServerHarness()
        var out = ""
        for piece in stride(from: 0, to: long.utf8.count, by: 7) {
            out += h2.send(Array(bytes(long)[piece..<min(piece + 7, long.utf8.count)]))
        }
        #expect(out == "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n")
        // Exactly 512 bytes with CRLF is fine.
        let exact = "NOOP " + String(repeating: "x", count: 505) + "\r\n"
        #expect(exact.utf8.count == 512)
        #expect(h.send(exact) == "250 2.0.0 Ok\r\n")
    }

    @Test func nulInCommandIs501() {
        let h = ServerHarness()
        #expect(h.send([0x4e, 0x4f, 0x00, 0x4f, 0x50, 13, 10]) == "501 5.5.2 NUL character in command\r\n")
        #expect(h.send("NOOP\r\n") == "250 2.0.0 Ok\r\n")
    }

    @Test func bareLFEndsCommandsButNotData() {
        let h = ServerHarness()
        let out = h.send("EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nx\n.\nMAIL FROM:<evil@x>\n.\n\r\n.\r\n")
        #expect(codes(out) == [250, 250, 250, 354, 250])
        #expect(h.delegate.bodies == [bytes("x\n.\nMAIL FROM:<evil@x>\n.\n\r\n")])
        let info = h.delegate.requests.compactMap { r -> SMTPMessageInfo? in if case .endOfData(let i) = r { return i }; return nil }
        #expect(info.first?.sawBareLineFeed == true)
    }

    @Test func bareLFCanBeRejected() {
        var c = SMTPServerConfiguration()
        c.bareLineFeedPolicy = .reject
        let h = ServerHarness(c)
        #expect(codes(h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\ny\r\n.\r\n")) == [250, 250, 250, 354, 554])
        #expect(h.delegate.aborts == 1)
    }

    @Test func overlongDataLineRejectedAtEndOfData() {
        let h = ServerHarness()
        let line = String(repeating: "y", count: 1200)
        let out = h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\(line)\r\n.\r\nNOOP\r\n")
        #expect(codes(out) == [250, 250, 250, 354, 500, 250])
        #expect(out.contains("500 5.5.6"))
        var c = SMTPServerConfiguration()
        c.longDataLinePolicy = .accept
        let h2 = ServerHarness(c)
        #expect(codes(h2.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\(line)\r\n.\r\n")) == [250, 250, 250, 354, 250])
        #expect(h2.delegate.bodies.first?.count == 1202)
    }

    @Test func sizeLimits() {
        var c = SMTPServerConfiguration()
        c.maxMessageSize = 100
        let h = ServerHarness(c)
        h.send("EHLO c\r\n")
        #expect(h.send("MAIL FROM:<a@b> SIZE=101\r\n") == "552 5.3.4 Error: message too big for system\r\n")
        let body = String(repeating: "z", count: 50) + "\r\n" + String(repeating: "z", count: 50) + "\r\n"
        let out = h.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\(body).\r\n")
        #expect(codes(out) == [250, 250, 354, 552])
        #expect(h.delegate.bodies.isEmpty)
        #expect(h.delegate.aborts == 1)
        #expect(codes(h.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmall\r\n.\r\n")) == [250, 250, 354, 250])
    }

    @Test func tooManyRecipients() {
        var c = SMTPServerConfiguration()
        c.maxRecipients = 2
        let h = ServerHarness(c)
        let out = h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\n")
        #expect(codes(out) == [250, 250, 250, 250, 452])
        #expect(out.hasSuffix("452 4.5.3 Error: too many recipients\r\n"))
        #expect(h.session.transaction.recipients.count == 2)
    }

    @Test func tooManyErrorsCloses() {
        var c = SMTPServerConfiguration()
        c.maxErrors = 3
        let h = ServerHarness(c)
        let a = h.session.receive(bytes("X\r\nY\r\nZ\r\nNOOP\r\n"))
        #expect(a.shouldClose)
        #expect(codes(h.takeOutput()) == [500, 500, 500, 421])
    }

    @Test func authPlainAndLogin() {
        var c = SMTPServerConfiguration()
        c.authEnabled = true
        c.allowUnencryptedAuth = true
        c.requireAuth = true
        let h = ServerHarness(c, decide: { r in
            if case .auth(let cred) = r { return cred.password == "secret" ? .accept : .reply(SMTPReply(535, "5.7.8", "bad credentials")) }
            return .accept
        })
        h.send("EHLO c\r\n")
        #expect(h.send("MAIL FROM:<a@b>\r\n").hasPrefix("530 5.7.0"))
        let wrong = Base64.encode(bytes("\u{0}user\u{0}nope"))
        #expect(h.send("AUTH PLAIN \(wrong)\r\n").hasPrefix("535 5.7.8"))
        #expect(h.send("AUTH PLAIN\r\n") == "334 \r\n")
        #expect(h.send("*\r\n").hasPrefix("501 5.0.0"))
        #expect(h.send("AUTH PLAIN !!!\r\n").hasPrefix("501 5.5.2"))
        #expect(h.send("AUTH CRAM-MD5\r\n").hasPrefix("504"))
        #expect(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n")
        #expect(h.send("\(Base64.encode(bytes("user")))\r\n") == "334 UGFzc3dvcmQ6\r\n")
        #expect(h.send("\(Base64.encode(bytes("secret")))\r\n") == "235 2.7.0 Authentication successful\r\n")
        #expect(h.session.authenticatedUser == "user")
        #expect(h.send("AUTH PLAIN x\r\n").hasPrefix("503"))
        #expect(h.send("MAIL FROM:<a@b>\r\n").hasPrefix("250"))
        let creds = h.delegate.requests.compactMap { r -> SMTPAuthCredentials? in if case .auth(let c) = r { return c }; return nil }
        #expect(creds.first == SMTPAuthCredentials(mechanism: .plain, username: "user", password: "nope"))
    }

    @Test func startTLSResetsAndDiscardsPipelinedInput() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.startTLSEnabled = true
        let h = ServerHarness(c)
        h.send("EHLO c\r\n")
        let a = h.session.receive(bytes("STARTTLS\r\nMAIL FROM:<injected@x>\r\n"))
        #expect(a.shouldStartTLS && a.shouldFlush)
        #expect(h.takeOutput() == "220 2.0.0 Ready to start TLS\r\n")
        #expect(h.session.isTLSActive)
        #expect(h.session.helo == nil)
        #expect(h.send("MAIL FROM:<a@b>\r\n").hasPrefix("503 5.5.1"))
        let ehlo = h.send("EHLO c\r\n")
        #expect(!ehlo.contains("STARTTLS"))
        #expect(h.send("STARTTLS\r\n").hasPrefix("503"))
    }

    @Test func startTLSDecidedAsynchronouslyDiscardsBufferedInput() {
        var c = SMTPServerConfiguration()
        c.startTLSEnabled = true
        let h = ServerHarness(c, decide: { r in r == .startTLS ? .pending : .accept })
        h.send("EHLO c\r\n")
        #expect(h.send("STARTTLS\r\nNOOP\r\n") == "")
        let a = h.session.decide(.accept)
        #expect(a.shouldStartTLS)
        #expect(h.takeOutput() == "220 2.0.0 Ready to start TLS\r\n")
        #expect(h.session.bufferedInputBytes == 0)
        #expect(h.send("NOOP\r\n") == "250 2.0.0 Ok\r\n")
    }

    @Test func connectionLostMidDataAbortsTransaction() {
        let h = ServerHarness()
        h.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial")
        h.session.connectionClosed()
        #expect(h.delegate.aborts == 1)
        #expect(h.session.isClosed)
    }

    @Test func timeoutSays421() {
        let h = ServerHarness()
        let a = h.session.timedOut()
        #expect(a.shouldClose)
        #expect(h.takeOutput().hasPrefix("421 4.4.2"))
    }

    /// Random and mutated input never traps, and the session keeps answering or closes.
    @Test func fuzzNeverTraps() {
        var rng = SplitMix64(seed: 0x5EED)
        let seeds = [
            "EHLO c\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d> NOTIFY=DELAY ORCPT=rfc822;c+40d\r\nDATA\r\nx\r\n..y\r\n.\r\nQUIT\r\n",
            "HELO x\nAUTH LOGIN\ndXNlcg==\ncGFzcw==\nSTARTTLS\nRSET\nVRFY a\n",
            "EHLO c\r\nAUTH PLAIN AHUAcA==\r\nMAIL FROM:<> BODY=7BIT RET=FULL ENVID=x\r\n",
        ]
        var c = SMTPServerConfiguration()
        c.authEnabled = true
        c.allowUnencryptedAuth = true
        c.startTLSEnabled = true
        c.maxMessageSize = 200
        c.maxErrors = 50
        for round in 0..<3000 {
            var input = bytes(seeds[round % seeds.count])
            let mutations = Int(rng.next() % 8)
            for _ in 0..<mutations {
                guard !input.isEmpty else { break }
                let pos = Int(rng.next() % UInt64(input.count))
                switch rng.next() % 4 {
                case 0: input[pos] = UInt8(truncatingIfNeeded: rng.next())
                case 1: input.insert(UInt8(truncatingIfNeeded: rng.next()), at: pos)
                case 2: input.remove(at: pos)
                default: input.insert(contentsOf: input[pos..<min(input.count, pos + 20)], at: pos)
                }
            }
            if round % 10 == 0 {
                input = (0..<Int(rng.next() % 700)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            let h = ServerHarness(c, decide: { _ in
                .accept
            })
            var offset = 0
            while offset < input.count {
                let n = 1 + Int(rng.next() % 64)
                h.session.receive(Array(input[offset..<min(input.count, offset + n)]))
                offset += n
            }
            let out = h.takeOutput()
            var p = SMTPReplyParser()
            p.feed(bytes(out))
            while let r = p.next() {
                if case .failure(let e) = r { Issue.record("server produced unparsable output \(e)") }
            }
        }
    }
}
