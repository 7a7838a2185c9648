import Testing
import PeregrineSMTP

/// Input a peer controls that is well-formed but out of range: the session
/// answers with the right reply (or closes with a protocol error) and never
/// traps or grows without bound.
@Suite struct PeerInputLimitTests {
    /// RFC 1870: a size over the limit is 552, however many digits it has.
    @Test func hugeSizeParameterIsMessageTooBigNotASyntaxError() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxMessageSize = 1000
        let h = ServerHarness(c)
        h.send("EHLO c\r\n")
        for size in ["99999999999999999999", "9223372036854775807", "9223372036854775808",
                     String(repeating: "9", count: 300)] {
            #expect(h.send("MAIL FROM:<a@b> SIZE=\(size)\r\n") == "552 5.3.4 Error: message too big for system\r\n",
                    "SIZE=\(size)")
        }
        // Not a number at all stays a syntax error.
        for bad in ["-1", "1e9", "", "+5"] {
            #expect(h.send("MAIL FROM:<a@b> SIZE=\(bad)\r\n").hasPrefix("501 5.5.4"), "SIZE=\(bad)")
        }
        // And the session is still usable.
        #expect(codes(h.send("MAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\n")) == [250, 250, 354, 250])
    }

    @Test func replyWithTooManyLinesIsAnError() throws {
        var p = SMTPReplyParser(maxLinesPerReply: 50)
        p.feed(bytes(String(repeating: "250-more\r\n", count: 49) + "250 last\r\n"))
        let ok = try #require(try p.next()?.get())
        #expect(ok.lines.count == 50)

        var q = SMTPReplyParser(maxLinesPerReply: 50)
        q.feed(bytes(String(repeating: "250-more\r\n", count: 60)))
        #expect(q.next() == .failure(.tooManyLines(limit: 50)))
    }

    /// A server that streams "250-" lines forever makes the client give up.
    @Test func endlessContinuationLinesCloseTheClient() {
        let h = ClientHarness()
        h.server("220 hi\r\n")
        let chunk = String(repeating: "250-x\r\n", count: 100)
        var rounds = 0
        while h.closeReason == nil && rounds < 100 {
            h.server(chunk)
            rounds += 1
        }
        guard case .protocolError(let why)? = h.closeReason else {
            Issue.record("client still open after \(rounds * 100) continuation lines: \(String(describing: h.closeReason))")
            return
        }
        #expect(why.contains("reply of more than"), "the close reason names the limit in words (it goes into t records)")
    }
}
