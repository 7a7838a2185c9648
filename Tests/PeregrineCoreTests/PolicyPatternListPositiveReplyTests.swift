import Testing
import PeregrineSMTP
@testable import PeregrineConfig
@testable import PeregrineEngine
@testable import PeregrineDaemon

/// Which pattern lists see 2xx replies (decided at load, so the bulk of
/// replies runs no regex): those with a `mode=normal` rule or a rule naming a 2xx code.
@Suite struct PolicyPatternListPositiveReplyTests {
    func list(_ rules: String) throws -> SMTPPatternList {
        let nodes = try BlockConfig.parse("<smtp-pattern-list p>\n\(rules)\n</smtp-pattern-list>", file: "p.conf")
        return try SMTPPatternList(block: nodes[0])
    }

    @Test func ruleNamesPositiveCode() throws {
        func names(_ regex: String) throws -> Bool {
            try SMTPPatternRule(pattern: CompiledRegex(regex), actions: [.backoff]).namesPositiveCode
        }
        for yes in ["^250 ", "2\\d\\d", "2[0-9][0-9] ok", "^2..", "2\\.0\\.0", "[2-5]\\d\\d", "(250|251)"] {
            #expect(try names(yes), "\(yes)")
        }
        for no in ["421.*4\\.7\\.28", "\\[TS(S)?0[1-4]\\]", "5\\.2\\.2", "452 4.2.2", "exceeded the rate limit", "\\(S775\\)", "TS02"] {
            #expect(try !names(no), "\(no)")
        }
    }

    @Test func listsWithoutRulesForPositiveRepliesSkipThem() throws {
        let deferrals = try list("""
            reply /421.*4\\.7\\.28/ mode=backoff
            reply /rate limit/ mode=backoff
            """)
        #expect(!deferrals.seesPositiveReplies)
        // A 2xx never runs the list, whatever its text says ...
        #expect(deferrals.actions(for: ReplyText(code: 250, lines: ["2.0.0 ok, rate limit near"])).isEmpty)
        #expect(deferrals.actions(for: SMTPReply(250, "2.0.0", "ok, rate limit near")).isEmpty)
        // ... every other reply does, in file order.
        #expect(deferrals.actions(for: SMTPReply(451, "4.7.0", "rate limit")) == [.backoff])
        #expect(deferrals.actions(for: SMTPReply(421, "4.7.28", "unusual rate")) == [.backoff])
        #expect(deferrals.applies(toCode: 421) && !deferrals.applies(toCode: 250))
    }

    @Test func modeNormalOrA2xxCodeMakesTheWholeListSeePositiveReplies() throws {
        let normal = try list("""
            reply /rate limit/ mode=backoff
            reply /all clear/ mode=normal
            """)
        #expect(normal.seesPositiveReplies)
        #expect(normal.actions(for: SMTPReply(250, nil, "all clear")) == [.normal])
        // The whole list runs for a 2xx, first match still wins.
        #expect(normal.actions(for: SMTPReply(250, nil, "rate limit, all clear")) == [.backoff])
        let coded = try list("reply /^250 .*slow down/ suspend=10m")
        #expect(coded.seesPositiveReplies)
        #expect(coded.actions(for: SMTPReply(250, nil, "queued, slow down")) == [.suspend(.seconds(600))])
        // Rules set later are re-examined.
        var edited = try list("reply /rate limit/ mode=backoff")
        #expect(!edited.seesPositiveReplies)
        edited.rules.append(SMTPPatternRule(pattern: try CompiledRegex("ok"), actions: [.normal]))
        #expect(edited.seesPositiveReplies)
    }

    @Test func policySourceAnswersPerQueue() throws {
        let config = try PeregrineConfig.parse("""
            <smtp-pattern-list deferrals>
                reply /421/ mode=backoff
            </smtp-pattern-list>
            <smtp-pattern-list recovering>
                reply /421/ mode=backoff
                reply /^250 / mode=normal
            </smtp-pattern-list>
            <domain a.test>
                smtp-pattern-list deferrals
            </domain>
            <domain b.test>
                smtp-pattern-list recovering
            </domain>
            """, file: "p.conf")
        let source = ConfigPolicySource(config: config)
        let a = QueueKey(domain: "a.test", vmta: "default"), b = QueueKey(domain: "b.test", vmta: "default")
        let c = QueueKey(domain: "c.test", vmta: "default")
        #expect(!source.patternsSeePositiveReplies(queue: a))
        #expect(source.patternsSeePositiveReplies(queue: b))
        #expect(!source.patternsSeePositiveReplies(queue: c))
        #expect(source.actions(for: SMTPReply(250, nil, "ok"), queue: a).isEmpty)
        #expect(source.actions(for: SMTPReply(250, nil, "ok"), queue: b) == [.normal])
        #expect(source.actions(for: SMTPReply(421, nil, "busy"), queue: a) == [.backoff])
    }
}
