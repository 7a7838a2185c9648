import PeregrineSMTP
import Testing

// Issue 12 item 7: the EHLO/HELO argument ends up in the Received header, so
// a control byte in it could forge a header line at the receiver. It must be
// an RFC 5321 Domain or address-literal; anything else gets 501 and the
// session goes on (the client may try again).
@Suite struct HeloArgumentTests {
    @Test(arguments: ["a", "mx.example.com", "mx.example.com.", "host-1.test", "WIN_PC.corp.local", "localhost",
                      "[192.0.2.1]", "[IPv6:2001:db8::1]", "a23456789012345678901234567890123456789012345678901234567890123.test"])
    func aDomainOrAddressLiteralIsAccepted(argument: String) {
        guard case .success(.helo(let h)) = SMTPCommandParser.parse(bytes("EHLO \(argument)")) else {
            Issue.record("EHLO \(argument) refused")
            return
        }
        #expect(h.domain == argument)
    }

    @Test(arguments: ["a\rX-Injected: yes", "a\r", "\ra", "a\u{0B}b", "a\tb", "a\u{7F}", "-a.test", "a-.test", "a..b",
                      ".a", "a b\rc", "[]", "[1.2.3.4", "[a[b]", "caf\u{E9}.test", "a@b.test", "a<b>", "\"quoted\"",
                      "a234567890123456789012345678901234567890123456789012345678901234.test"])
    func anythingElseGets501(argument: String) {
        for verb in ["EHLO", "HELO"] {
            guard case .failure(let reply) = SMTPCommandParser.parse(bytes("\(verb) \(argument)")) else {
                Issue.record("\(verb) \(argument.debugDescription) accepted")
                continue
            }
            #expect(reply.code == 501)
            #expect(reply.enhancedCode == EnhancedStatusCode(5, 5, 4))
        }
    }

    @Test func aNameLongerThan255BytesIsRefused() {
        let long = Array(repeating: "abcdefghi", count: 26).joined(separator: ".") // 259 bytes
        guard case .failure(let reply) = SMTPCommandParser.parse(bytes("EHLO \(long)")) else {
            Issue.record("accepted a \(long.utf8.count)-byte name")
            return
        }
        #expect(reply.code == 501)
    }

    /// The finding: a bare CR inside EHLO's argument. The session answers 501,
    /// keeps no HELO, refuses MAIL until a valid EHLO, and nothing of the
    /// injected text reaches the delegate, whatever way the bytes arrive.
    @Test func injectedHeaderThroughEHLOSplitAtEveryByte() {
        let script = bytes("EHLO a\rX-Injected: yes\r\nMAIL FROM:<s@x.org>\r\nEHLO good.test\r\nMAIL FROM:<s@x.org>\r\nQUIT\r\n")
        let reference = ServerHarness()
        let refOut = reference.send(script)
        #expect(codes(refOut) == [501, 503, 250, 250, 221])
        #expect(reference.delegate.requests.contains(.helo(SMTPHelo(domain: "good.test", isExtended: true))))
        #expect(!refOut.contains("X-Injected"))
        for request in reference.delegate.requests {
            if case .helo(let h) = request { #expect(h.domain == "good.test") }
        }
        for i in 0...script.count {
            let h = ServerHarness()
            var out = h.send(Array(script[..<i]))
            out += h.send(Array(script[i...]))
            #expect(out == refOut, "split at \(i)")
            #expect(h.delegate.requests == reference.delegate.requests, "split at \(i)")
        }
    }

    @Test func everyControlByteInTheArgumentIsRefused() {
        for b in UInt8(0)...UInt8(31) where b != 10 {
            let h = ServerHarness()
            var line = bytes("EHLO a")
            line.append(b)
            line += bytes("b.test\r\n")
            let out = h.send(line)
            // NUL is refused earlier (501 5.5.2); every other control by the argument check.
            #expect(codes(out) == [501], "byte \(b)")
            #expect(h.session.helo == nil, "byte \(b)")
        }
        let h = ServerHarness()
        #expect(codes(h.send(bytes("HELO a\u{7F}b\r\n"))) == [501])
    }
}
