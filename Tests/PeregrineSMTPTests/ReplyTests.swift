import Testing
import PeregrineSMTP

@Suite struct ReplyTests {
    @Test func parsesSingleLineWithEnhancedCode() throws {
        var p = SMTPReplyParser()
        p.feed(bytes("550 5.1.1 The email account does not exist\r\n"))
        let r = try #require(try p.next()?.get())
        #expect(r.code == 550)
        #expect(r.enhancedCode == EnhancedStatusCode(5, 1, 1))
        #expect(r.lines == ["The email account does not exist"])
        #expect(p.next() == nil)
    }

    @Test func parsesGmailMultiLineSplitAtEveryByte() throws {
        let wire = "421-4.7.28 Gmail has detected an unusual rate\r\n421-4.7.28 of unsolicited mail.\r\n421 4.7.28 Try later.\r\n"
        let b = bytes(wire)
        for split in 0...b.count {
            var p = SMTPReplyParser()
            p.feed(Array(b[..<split]))
            var got: [SMTPReply] = []
            while let r = p.next() { got.append(try r.get()) }
            p.feed(Array(b[split...]))
            while let r = p.next() { got.append(try r.get()) }
            #expect(got.count == 1)
            #expect(got.first?.code == 421)
            #expect(got.first?.enhancedCode?.description == "4.7.28")
            #expect(got.first?.lines == ["Gmail has detected an unusual rate", "of unsolicited mail.", "Try later."])
        }
    }

    @Test func parsesReplyWithoutEnhancedCodeAndBareLF() throws {
        var p = SMTPReplyParser()
        p.feed(bytes("220 mx.gmx.net ESMTP\n250\r\n421-gmx.net Nemesis\n421 Reject due to policy\n"))
        let a = try #require(try p.next()?.get())
        #expect(a.code == 220 && a.enhancedCode == nil && a.lines == ["mx.gmx.net ESMTP"])
        let b = try #require(try p.next()?.get())
        #expect(b.code == 250 && b.lines == [""])
        let c = try #require(try p.next()?.get())
        #expect(c.code == 421 && c.lines.count == 2 && c.enhancedCode == nil)
    }

    @Test func enhancedCodeOfOtherClassIsText() throws {
        var p = SMTPReplyParser()
        p.feed(bytes("250 5.1.1 odd\r\n"))
        let r = try #require(try p.next()?.get())
        #expect(r.enhancedCode == nil)
        #expect(r.lines == ["5.1.1 odd"])
    }

    @Test func malformedLinesAreErrorsAndParserResyncs() throws {
        var p = SMTPReplyParser()
        p.feed(bytes("hello\r\n25\r\n650 x\r\n250x\r\n250-a\r\n251 b\r\n250 ok\r\n"))
        var errors = 0
        var ok: [SMTPReply] = []
        while let r = p.next() {
            switch r { case .success(let x): ok.append(x); case .failure: errors += 1 }
        }
        #expect(errors == 5)
        #expect(ok.map(\.code) == [250])
    }

    @Test func overlongReplyLineIsAnError() {
        var p = SMTPReplyParser(maxLineLength: 100)
        p.feed(bytes("250 " + String(repeating: "x", count: 200)))
        #expect(p.next() == .failure(.lineTooLong))
        p.feed(bytes("yyy\r\n250 fine\r\n"))
        #expect(p.next() == .success(SMTPReply(250, nil, "fine")))
    }

    @Test func formatsMultiLineRepeatingEnhancedCode() {
        let r = SMTPReply(code: 452, enhancedCode: EnhancedStatusCode(4, 5, 3), lines: ["Too many", "recipients"])
        #expect(text(r.wireBytes) == "452-4.5.3 Too many\r\n452 4.5.3 recipients\r\n")
        #expect(text(SMTPReply(code: 354, lines: ["go"]).wireBytes) == "354 go\r\n")
        #expect(r.description == "452 4.5.3 Too many recipients")
    }

    @Test func formattedRepliesRoundTrip() throws {
        let samples = [
            SMTPReply(code: 250, lines: ["mx", "PIPELINING", "SIZE 100"]),
            SMTPReply(451, "4.7.650", "The mail server has been temporarily rate limited"),
            SMTPReply(code: 221, enhancedCode: EnhancedStatusCode(2, 0, 0), lines: ["Bye"]),
        ]
        for s in samples {
            var p = SMTPReplyParser()
            p.feed(s.wireBytes)
            #expect(try p.next()?.get() == s)
        }
    }

    @Test func enhancedStatusCodeParsing() {
        #expect(EnhancedStatusCode("4.7.28")?.subject == 7)
        #expect(EnhancedStatusCode("5.1.10")?.detail == 10)
        #expect(EnhancedStatusCode("3.1.1") == nil)
        #expect(EnhancedStatusCode("5.1") == nil)
        #expect(EnhancedStatusCode("5.1.1x") == nil)
        #expect(EnhancedStatusCode("5.1234.1") == nil)
    }
}
