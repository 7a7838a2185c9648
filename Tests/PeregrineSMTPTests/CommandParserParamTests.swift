import Testing
@testable import PeregrineSMTP

/// MAIL/RCPT parameter parsing straight from command bytes (the parser works
/// on slices of the line; these pin what it accepts and how it fails).
@Suite struct CommandParserParamTests {
    static func parse(_ line: String) -> Result<SMTPCommand, SMTPReply> { SMTPCommandParser.parse(Array(line.utf8)) }

    static func code(_ line: String) -> Int? {
        if case .failure(let r) = parse(line) { return r.code }
        return nil
    }

    @Test func mailParametersInAnyCaseAndSpacing() {
        var expected = SMTPMailFrom(reversePath: "s@x.org", size: 7, body: .eightBitMIME)
        expected.envelopeID = "a+b"; expected.ret = .headers; expected.auth = "<>"
        #expect(Self.parse("mail from:<s@x.org>   size=007  body=8bitmime envid=a+2Bb ret=hdrs auth=<> ")
                == .success(.mail(expected)))
        #expect(Self.parse("MAIL FROM:<@a,@b:s@x.org>") == .success(.mail(SMTPMailFrom(reversePath: "s@x.org"))))
        #expect(Self.parse("MAIL FROM:<>") == .success(.mail(SMTPMailFrom(reversePath: ""))))
        // Too many digits for Int is a size over any limit, not a syntax error.
        #expect(Self.parse("MAIL FROM:<a@b> SIZE=1234567890123456789012")
                == .success(.mail(SMTPMailFrom(reversePath: "a@b", size: Int.max))))
        #expect(Self.parse("MAIL FROM:<a@b> SIZE=999999999999999999")
                == .success(.mail(SMTPMailFrom(reversePath: "a@b", size: 999_999_999_999_999_999))))
        // Keywords compare as String.uppercased() does, Unicode case mapping included.
        #expect(Self.parse("MAIL FROM:<a@b> ſize=10") == .success(.mail(SMTPMailFrom(reversePath: "a@b", size: 10))))
        #expect(Self.parse("MAIL FROM:<a@b> BODY=8bitmıme")
                == .success(.mail(SMTPMailFrom(reversePath: "a@b", body: .eightBitMIME))))
    }

    @Test func mailParameterFailures() {
        #expect(Self.code("MAIL FROM:<a@b> SIZE=") == 501)
        #expect(Self.code("MAIL FROM:<a@b> SIZE") == 501)
        #expect(Self.code("MAIL FROM:<a@b> SIZE=-1") == 501)
        #expect(Self.code("MAIL FROM:<a@b> BODY") == 501)
        #expect(Self.code("MAIL FROM:<a@b> RET=NONE") == 501)
        #expect(Self.code("MAIL FROM:<a@b> ENVID=") == 501)
        #expect(Self.code("MAIL FROM:<a@b> SIZEX=1") == 555)
        #expect(Self.code("MAIL FROM:<a@b> =1") == 555)
        #expect(Self.code("MAIL FROM:<a@b> SMTPUTF8") == 555)
        // The first bad parameter decides the reply.
        #expect(Self.code("MAIL FROM:<a@b> FOO=1 SIZE=x") == 555)
        #expect(Self.code("MAIL FROM:<a@b> SIZE=x FOO=1") == 501)
        #expect(Self.code("MAIL FROM:<a b>") == 501)
        #expect(Self.code("MAIL FROM:<a@b>x") == 501)
    }

    @Test func rcptParameters() {
        #expect(Self.parse("RCPT TO:<r@y.org> notify=success,delay orcpt=rfc822;r+40y.org")
                == .success(.rcpt(SMTPRcptTo(forwardPath: "r@y.org", notify: [.success, .delay],
                                             originalRecipient: .init(addressType: "rfc822", address: "r@y.org")))))
        #expect(Self.parse("RCPT TO:<r@y> NOTIFY=NEVER") == .success(.rcpt(SMTPRcptTo(forwardPath: "r@y", notify: .never))))
        #expect(Self.code("RCPT TO:<r@y> NOTIFY=SUCCESS,") == 501)
        #expect(Self.code("RCPT TO:<r@y> NOTIFY=,SUCCESS") == 501)
        #expect(Self.code("RCPT TO:<r@y> NOTIFY=SUCCESS,,DELAY") == 501)
        #expect(Self.code("RCPT TO:<r@y> NOTIFY=") == 501)
        #expect(Self.code("RCPT TO:<r@y> ORCPT=;r@y") == 501)
        #expect(Self.code("RCPT TO:<r@y> ORCPT=rfc822;") == 501)
        #expect(Self.code("RCPT TO:<r@y> SIZE=1") == 555)
        #expect(Self.code("RCPT TO:<>") == 501)
    }
}
