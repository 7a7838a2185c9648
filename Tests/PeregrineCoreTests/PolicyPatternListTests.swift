import Testing
import PeregrineSMTP
@testable import PeregrineConfig
@testable import PeregrineEngine

@Suite struct PolicyPatternListTests {
    func list(_ text: String) throws -> SMTPPatternList {
        let nodes = try BlockConfig.parse(text, file: "p.conf")
        return try SMTPPatternList(block: nodes[0])
    }

    func error(_ text: String) -> String? {
        do { _ = try list(text); return nil } catch { return "\(error)" }
    }

    @Test func replyTextNormalisesMultilineReplies() throws {
        let gmail = try #require(ReplyText(raw: "421-4.7.28 Gmail has detected an unusual rate of unsolicited email\r\n421-4.7.28 originating from your IP address.\r\n421 4.7.28 Please try again later."))
        #expect(gmail.code == 421)
        #expect(gmail.enhancedCode == "4.7.28")
        #expect(gmail.full == "421 4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address. Please try again later.")
        let plain = try #require(ReplyText(raw: "421 Max message per connection reached, closing transmission channel"))
        #expect(plain.enhancedCode == nil)
        #expect(plain.isTransient && !plain.isPermanent)
        #expect(ReplyText(code: 550, enhancedCode: "5.1.1", lines: ["5.1.1 <x@y>: nope"]).full == "550 5.1.1 <x@y>: nope")
        #expect(ReplyText(code: 550, lines: ["4.1.1 mismatched class"]).enhancedCode == nil)
        #expect(ReplyText(raw: "hello") == nil)
        #expect(ReplyText(raw: "") == nil)
        #expect(ReplyText(raw: "250").map(\.full) == "250")
    }

    @Test func parsesEveryActionAndMatchesFirstRule() throws {
        let patterns = try list(#"""
        <smtp-pattern-list receivers>
            reply /421 .* Please try again later/ mode=backoff
            reply /\[TS0[1-3]\] Messages from/   mode=backoff
            reply /\[TSS04\]/ suspend=2h
            reply /exceeded the rate limit/      mode=backoff disable-source-ip=30m
            reply /blocked using/i disable-source-ip
            reply /permanently deferred/ bounce
            reply /all clear/ mode=normal
        </smtp-pattern-list>
        """#)
        #expect(patterns.name == "receivers")
        #expect(patterns.rules.count == 7)
        #expect(patterns.rules[0].location == ConfigLocation(file: "p.conf", line: 2))
        #expect(patterns.rules[3].actions == [.backoff, .disableSourceIP(.seconds(1800))])
        #expect(patterns.rules[4].actions == [.disableSourceIP(nil)])

        let gmail = try #require(ReplyText(raw: "421-4.7.0 Unusual rate.\r\n421 4.7.0 Please try again later"))
        #expect(patterns.actions(for: gmail) == [.backoff])
        let yahoo = ReplyText(code: 421, lines: ["4.7.1 [TS03] Messages from 203.0.113.9 will be permanently deferred"])
        // First match wins: the TS03 rule comes before "permanently deferred".
        #expect(patterns.actions(for: yahoo) == [.backoff])
        let tss04 = ReplyText(code: 421, lines: ["4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred"])
        #expect(patterns.actions(for: tss04) == [.suspend(.seconds(7200))])
        #expect(patterns.actions(for: ReplyText(code: 550, lines: ["5.7.1 Client host BLOCKED USING zen"])) == [.disableSourceIP(nil)])
        #expect(patterns.actions(for: ReplyText(code: 250, lines: ["all clear"])) == [.normal])
        #expect(patterns.actions(for: ReplyText(code: 250, lines: ["2.0.0 OK"])).isEmpty)
        #expect(SMTPPatternAction.suspend(.seconds(7200)).description == "suspend=2h")
        #expect(SMTPPatternAction.disableSourceIP(nil).description == "disable-source-ip")
    }

    @Test func acceptsPeregrineSMTPReplies() throws {
        let reply = SMTPReply(code: 421, enhancedCode: EnhancedStatusCode("4.7.0"), lines: ["Try again later,", "closing connection."])
        #expect(ReplyText(reply).full == "421 4.7.0 Try again later, closing connection.")
        #expect(ReplyText(reply).full == reply.description)
        let patterns = try list("<smtp-pattern-list p>\nreply /^421 4\\.7\\.0 Try again/ mode=backoff\n</smtp-pattern-list>")
        #expect(patterns.actions(for: reply) == [.backoff])
        #expect(BounceClassifier().classify(SMTPReply(550, "5.1.1", "no such user")) == .badMailbox)
    }

    @Test func compiledRegexSyntax() throws {
        #expect(try CompiledRegex(#"^4\d\d 4\.7\.\d+"#).matches("421 4.7.28 slow down"))
        #expect(try !CompiledRegex(#"^4\d\d"#).matches("250 ok"))
        #expect(CompiledRegex.translate(#"a\d[\d]\D\/b"#) == #"a[0-9][\d][^0-9]/b"#)
        #expect(try CompiledRegex(#"https?:\/\/postmaster"#).matches("see https://postmaster.example"))
        #expect(try CompiledRegex(#"\bspam\b"#, caseInsensitive: true).matches("Rejected as SPAM."))
        #expect(try !CompiledRegex(#"\bspam\b"#).matches("antispam"))
        #expect(try CompiledRegex("TSS04", caseInsensitive: true) == CompiledRegex("TSS04", caseInsensitive: true))
        #expect(try CompiledRegex("x", caseInsensitive: true).description == "/x/i")
        #expect(throws: ConfigValueError.self) { try CompiledRegex("a(b") }
        #expect(throws: ConfigValueError.self) { try CompiledRegex("[z-a]") }
    }

    @Test func patternListErrors() {
        #expect(error("<smtp-pattern-list>\n</smtp-pattern-list>") == "p.conf:1: <smtp-pattern-list> expects one list name, as in <smtp-pattern-list NAME>, got ''")
        #expect(error("<smtp-pattern-list a>\nmatch /x/ bounce\n</smtp-pattern-list>") == "p.conf:2: unknown directive 'match' in <smtp-pattern-list a> (expected: reply /REGEX/ ACTION…)")
        #expect(error("<smtp-pattern-list a>\nreply /x/\n</smtp-pattern-list>") == "p.conf:2: reply expects /REGEX/ and at least one action, got '/x/'")
        #expect(error("<smtp-pattern-list a>\nreply x bounce\n</smtp-pattern-list>") == "p.conf:2: reply: 'x' is not a /REGEX/ literal")
        #expect(error("<smtp-pattern-list a>\nreply /x(/ bounce\n</smtp-pattern-list>")?.hasPrefix("p.conf:2: reply: /x(/ is not a valid regular expression") == true)
        #expect(error("<smtp-pattern-list a>\nreply /x/ explode\n</smtp-pattern-list>") == "p.conf:2: reply: unknown action 'explode' (expected mode=backoff, mode=normal, suspend=DURATION, disable-source-ip[=DURATION], bounce)")
        #expect(error("<smtp-pattern-list a>\nreply /x/ mode=sleepy\n</smtp-pattern-list>") == "p.conf:2: reply: unknown mode 'sleepy' (expected mode=backoff or mode=normal)")
        #expect(error("<smtp-pattern-list a>\nreply /x/ suspend=soon\n</smtp-pattern-list>") == "p.conf:2: reply: 'soon' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(error("<smtp-pattern-list a>\nreply /x/ bounce=1h\n</smtp-pattern-list>") == "p.conf:2: reply: unknown action 'bounce=1h' (expected mode=backoff, mode=normal, suspend=DURATION, disable-source-ip[=DURATION], bounce)")
        #expect(error("<smtp-pattern-list a>\n<domain x>\n</domain>\n</smtp-pattern-list>") == "p.conf:2: block <domain x> is not allowed inside <smtp-pattern-list a>")
    }
}

/// Found by the config fuzz target: glibc's regcomp took over 3 GB on a
/// pattern of stacked quantifiers. Such patterns are refused at load.
@Suite struct CompiledRegexSizeTests {
    @Test func stackedQuantifiersAreRefused() {
        #expect(throws: ConfigValueError.self) { try CompiledRegex("4\\.7\\" + String(repeating: "+", count: 120) + ".28") }
        #expect(throws: ConfigValueError.self) { try CompiledRegex("a*?") }
        #expect(throws: ConfigValueError.self) { try CompiledRegex("(ab){2}*") }
    }

    @Test func nestedCountsThatMultiplyPastTheBoundAreRefused() {
        #expect(throws: ConfigValueError.self) { try CompiledRegex("((a{100}){100}){100}") }
        #expect(throws: ConfigValueError.self) { try CompiledRegex("x{30000}") }
    }

    @Test func ordinaryReplyPatternsStillCompile() throws {
        for pattern in ["421-4\\.7\\.28", "\\[TS(S)?0[1-4]\\]", "^5[0-9]{2} ", "(a|b)+c*d?", "[{}+*]+", "\\d{3}-\\d\\.\\d\\.\\d+",
                        "temporarily (deferred|rate limited)", "x{2,5}y{1,}"] {
            _ = try CompiledRegex(pattern)
        }
        #expect(try CompiledRegex("^5[0-9]{2} ").matches("550 5.1.1 no"))
    }
}
