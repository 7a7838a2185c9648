import Testing
@testable import PeregrineConfig
@testable import PeregrineEngine

@Suite struct PolicyBounceClassifierTests {
    /// Reply texts from DOMAIN.md (as received) and the category we expect.
    static let realReplies: [(String, BounceCategory)] = [
        // Gmail
        ("421-4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address. To protect our users from spam, email sent from your IP address has been temporarily rate limited.", .spamRelated),
        ("450-4.2.1 The user you are trying to contact is receiving email at a rate that prevents additional messages from being delivered.", .quotaIssues),
        ("421-4.7.0 Try again later, closing connection.", .policyRelated),
        ("421 4.4.5 Server busy, try again later.", .badConnection),
        ("452-4.5.3 Your message has too many recipients.", .policyRelated),
        ("550-5.1.1 The email account that you tried to reach does not exist.", .badMailbox),
        ("452-4.2.2 The recipient's inbox is out of storage space.", .quotaIssues),
        ("421-4.7.29 Your email has been rate limited because you're not using a TLS connection.", .policyRelated),
        ("550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", .policyRelated),
        // Yahoo / AOL
        ("421 4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", .policyRelated),
        ("421 4.7.1 [TS03] All messages from 203.0.113.9 will be permanently deferred; Retrying will NOT succeed.", .policyRelated),
        ("421 Max message per connection reached, closing transmission channel", .policyRelated),
        ("554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com)", .badMailbox),
        ("553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.9, because the ip is in Spamhaus's list", .spamRelated),
        // Microsoft
        ("451 4.7.650 The mail server [203.0.113.9] has been temporarily rate limited due to IP reputation. (S775)", .spamRelated),
        ("451 4.7.652 The mail server [203.0.113.9] has exceeded the maximum number of connections. (S3115)", .policyRelated),
        ("451 4.7.500 Server busy. Please try again later from [203.0.113.9]. (S77714)", .policyRelated),
        ("550 5.7.1 Unfortunately, messages from [203.0.113.9] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", .spamRelated),
        ("550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).", .badMailbox),
        // Apple iCloud
        ("421 4.7.1 Messages to x@icloud.com deferred due to excessive volume. Try again later", .policyRelated),
        ("451 4.7.1 Service unavailable - try again later", .policyRelated),
        ("552 5.2.2 <x@icloud.com>: user is over quota", .quotaIssues),
        ("550 5.1.1 <x@icloud.com>: user does not exist", .badMailbox),
        // Comcast
        ("421 - [Too many sessions opened]", .policyRelated),
        ("421 4.1.0 203.0.113.9 Throttled - try again later. Please see https://postmaster.comcast.net/smtp-error-codes.php#RL000003", .policyRelated),
        ("550 5.1.1 <x@comcast.net> recipient mailbox unallocated", .badMailbox),
        // GMX / Web.de
        ("421-gmx.net (mxgmx114) Nemesis ESMTP Service not available\r\n421-Reject due to policy restrictions.", .policyRelated),
        ("421 gmx.net (mxgmx114) Nemesis ESMTP Service not available", .badConnection),
        // Orange
        ("421 mwinf5c79 ME Trop de connexions, veuillez verifier votre configuration. Too many connections, slow down. OFR005_104 [104]", .policyRelated),
        ("552 5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]", .quotaIssues),
        // Greylisting
        ("450 4.2.0 <rcpt@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", .policyRelated),
    ]

    @Test(arguments: realReplies)
    func classifiesRealReplies(raw: String, expected: BounceCategory) throws {
        let reply = try #require(ReplyText(raw: raw))
        #expect(BounceClassifier().classify(reply) == expected, "\(reply.full)")
    }

    @Test func everyBuiltInPatternCompiles() {
        #expect(BounceClassifier.builtIn.strongText.count == 13)
        #expect(BounceClassifier.builtIn.weakText.count == 5)
    }

    @Test func enhancedCodeRulesWhenTextSaysNothing() {
        let classifier = BounceClassifier()
        func cat(_ code: Int, _ enhanced: String) -> BounceCategory {
            classifier.classify(ReplyText(code: code, enhancedCode: enhanced, lines: ["whatever"]))
        }
        #expect(cat(550, "5.1.1") == .badMailbox)
        #expect(cat(550, "5.1.2") == .badDomain)
        #expect(cat(553, "5.1.8") == .invalidSender)
        #expect(cat(550, "5.2.1") == .inactiveMailbox)
        #expect(cat(552, "5.2.2") == .quotaIssues)
        #expect(cat(452, "4.2.2") == .quotaIssues)
        #expect(cat(552, "5.3.4") == .contentRelated)
        #expect(cat(451, "4.4.1") == .noAnswerFromHost)
        #expect(cat(554, "5.4.4") == .routingErrors)
        #expect(cat(554, "5.4.7") == .messageExpired)
        #expect(cat(501, "5.5.2") == .protocolErrors)
        #expect(cat(554, "5.6.0") == .contentRelated)
        #expect(cat(550, "5.7.1") == .policyRelated)
        #expect(cat(550, "5.7.26") == .policyRelated)
        #expect(cat(550, "5.9.9") == .other)
        #expect(BounceClassifier.category(forEnhancedCode: "2.0.0") == nil)
        #expect(BounceClassifier.category(forEnhancedCode: "junk") == nil)
        // 5.7.1 with spam words is spam-related, not policy-related.
        #expect(classifier.classify(ReplyText(code: 550, lines: ["5.7.1 Message rejected as spam"])) == .spamRelated)
        #expect(classifier.classify(ReplyText(code: 554, lines: ["5.7.1 Virus found in attachment"])) == .virusRelated)
        #expect(classifier.classify(ReplyText(code: 550, lines: ["Relaying denied"])) == .relayingIssues)
        #expect(classifier.classify(ReplyText(code: 500, lines: ["Syntax error, command unrecognized"])) == .protocolErrors)
        #expect(classifier.classify(ReplyText(code: 554, lines: ["Transaction failed"])) == .other)
    }

    @Test func customPatternsOverrideBuiltIns() throws {
        let nodes = try BlockConfig.parse("""
        <bounce-category-patterns>
            /^550 5\\.1\\.1 .*unallocated/ inactive-mailbox
            /TSS04/ Spam-Related
        </bounce-category-patterns>
        """, file: "b.conf")
        let classifier = try BounceClassifier(block: nodes[0])
        #expect(classifier.customRules.count == 2)
        #expect(classifier.classify(ReplyText(code: 550, lines: ["5.1.1 <x@comcast.net> recipient mailbox unallocated"])) == .inactiveMailbox)
        #expect(classifier.classify(ReplyText(code: 421, lines: ["4.7.0 [TSS04] Messages deferred"])) == .spamRelated)
        // Anything the custom rules miss still gets the built-in answer.
        #expect(classifier.classify(ReplyText(code: 550, lines: ["5.1.1 user does not exist"])) == .badMailbox)
    }

    @Test func customPatternErrors() {
        func error(_ body: String) -> String? {
            do {
                let nodes = try BlockConfig.parse("<bounce-category-patterns>\n\(body)\n</bounce-category-patterns>", file: "b.conf")
                _ = try BounceClassifier(block: nodes[0])
                return nil
            } catch { return "\(error)" }
        }
        #expect(error("/x/ spammy") == "b.conf:2: unknown bounce category 'spammy' (expected one of: \(BounceCategory.allCases.map(\.rawValue).joined(separator: ", ")))")
        #expect(error("/x/") == "b.conf:2: expected one category after /x/, got ''")
        // PowerMTA's `success`, which real configs put in this block, loads.
        #expect(error("/^2\\.0\\.0/ success") == nil)
        #expect(error("/x/ a b") == "b.conf:2: expected one category after /x/, got 'a b'")
        #expect(error("x spam-related") == "b.conf:2: expected '/REGEX/ category' in <bounce-category-patterns>, got 'x'")
        #expect(error("/x(/ other")?.hasPrefix("b.conf:2: /x(/: /x(/ is not a valid regular expression") == true)
        do {
            let nodes = try BlockConfig.parse("<bounce-category-patterns x>\n</bounce-category-patterns>", file: "b.conf")
            #expect(throws: ConfigError(ConfigLocation(file: "b.conf", line: 1), "<bounce-category-patterns> takes no arguments")) {
                try BounceClassifier(block: nodes[0])
            }
        } catch { Issue.record(error) }
    }
}
