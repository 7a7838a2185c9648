import Testing
@testable import PeregrineSink

/// The ISP policy engine, driven with byte-free calls and a hand-held clock.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkPolicyTests {
    static let s: UInt64 = 1_000_000_000

    static func reply(_ text: String) -> SinkReplyTemplate {
        switch SinkReplyTemplate.parse(text) {
        case .success(let t): return t
        case .failure(let e): Issue.record("bad reply \(text): \(e)"); return SinkReplyTemplate(code: 451, lines: [])
        }
    }

    static func gmailLike() -> SinkISPProfile {
        var p = SinkISPProfile(name: "gmail")
        p.domains = ["gmail.com"]
        p.replySuffix = "gsmtp"
        p.maxConnections = SinkLimit(value: 2, phase: .greeting, reply: reply("421-4.7.0 Try again later, closing connection."))
        p.maxMessagesPerConnection = SinkLimit(value: 3, phase: .mail, reply: reply("421 4.7.0 Try again later, closing connection."))
        p.messageRate = SinkRateLimit(rate: SinkRate(count: 5, seconds: 10, burst: 5), phase: .mail,
                                      reply: reply("421-4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address."),
                                      penalty: true)
        p.penaltyBox = SinkPenaltyBox(seconds: 60, phase: .mail,
                                      reply: reply("421 4.7.0 [TSS04] Messages from {ip} temporarily deferred"))
        p.recipientRules = [
            SinkRecipientRule(kind: .unknownUser, patterns: [SinkPattern("unknown*")],
                              reply: reply("550-5.1.1 The email account that you tried to reach does not exist.")),
            SinkRecipientRule(kind: .mailboxFull, patterns: [SinkPattern("full-?")],
                              reply: reply("452-4.2.2 The recipient's inbox is out of storage space.")),
        ]
        p.greylist = SinkGreylist(seconds: 300, patterns: [SinkPattern("grey*")],
                                  reply: reply("450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted"))
        p.mailboxRate = SinkMailboxRate(rate: SinkRate(count: 2, seconds: 60, burst: 2), patterns: [SinkPattern("busy*")],
                                        reply: reply("450-4.2.1 The user you are trying to contact is receiving email at a rate that prevents additional messages from being delivered."))
        return p
    }

    func policy(_ p: SinkISPProfile = SinkPolicyTests.gmailLike(), scale: Double = 1) -> (SinkPolicy, SinkProvider) {
        let policy = SinkPolicy(profiles: [p], timeScale: scale, seed: 7)
        return (policy, policy.providers[0])
    }

    /// Sends one whole message on `c`; returns the first refusal, or nil when accepted.
    func send(_ policy: SinkPolicy, _ c: SinkConnection, to rcpt: String = "a@gmail.com", at now: UInt64) -> SinkRenderedReply? {
        if let r = policy.mailFrom(c, sender: "s@example.com", now: now).reply { return r }
        if let r = policy.rcptTo(c, recipient: rcpt, now: now).reply { return r }
        #expect(policy.dataCommand(c, now: now) == .accept)
        return policy.endOfData(c, size: 100, now: now).reply
    }

    @Test func replyTextParsesCodeEnhancedAndContinuation() throws {
        let t = Self.reply("421-4.7.0 Try again later, closing connection.")
        #expect(t.code == 421 && t.enhanced == "4.7.0" && t.continued && t.close)
        #expect(t.lines == ["Try again later, closing connection."])
        let gmx = Self.reply("421-gmx.net (mxgmx114) Nemesis ESMTP Service not available\\n421 Reject due to policy restrictions.")
        #expect(gmx.enhanced == nil && gmx.lines.count == 2 && !gmx.continued)
        let bare = Self.reply("421 - [Too many sessions opened]")
        #expect(bare.lines == ["- [Too many sessions opened]"])
        // Recipient patterns are case-insensitive globs over the whole local part.
        #expect(SinkPattern("x").matches(Array("X".utf8)) && !SinkPattern("x").matches(Array("xy".utf8)))
        #expect(SinkPattern("grey*").matches(Array("GreyList7".utf8)) && !SinkPattern("grey*").matches(Array("agrey".utf8)))
        #expect(SinkPattern("a?c").matches(Array("abc".utf8)) && !SinkPattern("a?c").matches(Array("ac".utf8)))
        if case .success = SinkReplyTemplate.parse("hello") { Issue.record("accepted a reply with no code") }
        if case .success = SinkReplyTemplate.parse("250 ok\n550 no") { Issue.record("accepted mixed codes") }
    }

    @Test func connectionBeyondTheLimitIsRefusedAtGreeting() {
        let (policy, gmail) = policy()
        let (c1, d1) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        let (_, d2) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        let (c3, d3) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        #expect(d1 == .accept && d2 == .accept)
        let r = d3.reply
        #expect(r?.code == 421 && r?.enhanced == "4.7.0" && r?.close == true)
        // The reply-suffix ends the last line (Gmail's "<id> - gsmtp"), it is not a line of its own.
        #expect(r?.lines == ["Try again later, closing connection. gsmtp"])
        // Another IP has its own limit.
        let (_, other) = policy.connect(provider: gmail, ip: "10.0.0.2", now: 0)
        #expect(other == .accept)
        // A slot frees up once a connection closes.
        policy.disconnect(c3)
        policy.disconnect(c1)
        policy.disconnect(c1)  // idempotent
        let (_, d4) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        #expect(d4 == .accept)
        let ip = gmail.ips["10.0.0.1"]!.counters
        #expect(ip.sessions == 4 && ip.sessionsRefused[.maxConnections] == 1 && ip.peakConcurrentConnections == 3)
    }

    @Test func messageAfterThePerConnectionCapIsRefused() {
        let (policy, gmail) = policy()
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        for i in 0..<3 { #expect(send(policy, c, at: UInt64(i) * Self.s) == nil) }
        let r = send(policy, c, at: 3 * Self.s)
        #expect(r?.code == 421 && r?.reason == .maxMessagesPerConnection && r?.close == true)
        // A new connection may send again.
        let (c2, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 4 * Self.s)
        #expect(send(policy, c2, at: 4 * Self.s) == nil)
        let counters = gmail.ips["10.0.0.1"]!.counters
        #expect(counters.maxMessagesOnOneConnection == 3 && counters.messagesAccepted == 4)
        #expect(counters.messagesDeferred[.maxMessagesPerConnection] == 1)
    }

    @Test func rateOverflowIsDeferredWithTheProviderTextThenPenaltyBoxLifts() {
        var p = Self.gmailLike()
        p.maxMessagesPerConnection = nil
        let (policy, gmail) = policy(p)
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 0)
        // Burst of 5 passes, the 6th is over the rate.
        for _ in 0..<5 { #expect(send(policy, c, at: 0) == nil) }
        let over = send(policy, c, at: 0)
        #expect(over?.code == 421 && over?.enhanced == "4.7.28" && over?.reason == .messageRate)
        #expect(over?.lines.first?.hasPrefix("Gmail has detected an unusual rate") == true)
        // Tripping the rate put the IP in the penalty box for 60 s: even after
        // the bucket refilled, MAIL is deferred with the penalty text.
        let (c2, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 30 * Self.s)
        let boxed = send(policy, c2, at: 30 * Self.s)
        #expect(boxed?.reason == .penaltyBox)
        #expect(boxed?.text == "421 4.7.0 [TSS04] Messages from 10.0.0.9 temporarily deferred")
        // Another IP is unaffected.
        let (c3, _) = policy.connect(provider: gmail, ip: "10.0.0.10", now: 30 * Self.s)
        #expect(send(policy, c3, at: 30 * Self.s) == nil)
        // After the penalty time the box is lifted.
        let (c4, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 61 * Self.s)
        #expect(send(policy, c4, at: 61 * Self.s) == nil)
        let counters = gmail.ips["10.0.0.9"]!.counters
        #expect(counters.messagesDeferred[.messageRate] == 1 && counters.messagesDeferred[.penaltyBox] == 1)
    }

    @Test func timeScaleShrinksEveryConstant() {
        var p = Self.gmailLike()
        p.maxMessagesPerConnection = nil
        let (policy, gmail) = policy(p, scale: 0.01)
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 0)
        for _ in 0..<5 { #expect(send(policy, c, at: 0) == nil) }
        #expect(send(policy, c, at: 0)?.reason == .messageRate)
        // Penalty 60 s × 0.01 = 0.6 s.
        #expect(send(policy, c, at: Self.s / 2)?.reason == .penaltyBox)
        #expect(send(policy, c, at: Self.s) == nil)
    }

    /// POST /penalty-box/lift's policy side: the box ends at once (the test
    /// that waits for the daemon's backoff lifts it on that event).
    @Test func liftingEndsTheBoxAtOnce() {
        var p = Self.gmailLike()
        p.maxMessagesPerConnection = nil
        let (policy, gmail) = policy(p)
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 0)
        for _ in 0..<5 { _ = send(policy, c, at: 0) }
        #expect(send(policy, c, at: 0)?.reason == .messageRate)
        #expect(send(policy, c, at: 20 * Self.s)?.reason == .penaltyBox)
        #expect(policy.liftPenaltyBoxes(now: 20 * Self.s) == 1)
        #expect(send(policy, c, at: 20 * Self.s) == nil)
        // Nothing was on any more.
        #expect(policy.liftPenaltyBoxes(now: 20 * Self.s) == 0)
    }

    @Test func penaltyBoxWithAnAllowanceLetsATrickleThrough() {
        var p = Self.gmailLike()
        p.maxMessagesPerConnection = nil
        p.penaltyBox?.allow = SinkRate(count: 1, seconds: 10, burst: 1)
        let (policy, gmail) = policy(p)
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.9", now: 0)
        for _ in 0..<5 { _ = send(policy, c, at: 0) }
        #expect(send(policy, c, at: 0)?.reason == .messageRate)
        #expect(send(policy, c, at: 5 * Self.s)?.reason == .penaltyBox)
        #expect(send(policy, c, at: 11 * Self.s) == nil)
        #expect(send(policy, c, at: 12 * Self.s)?.reason == .penaltyBox)
    }

    @Test func recipientRulesRejectUnknownUsersAndFullMailboxes() {
        let (policy, gmail) = policy()
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        #expect(policy.mailFrom(c, sender: "s@example.com", now: 0) == .accept)
        let unknown = policy.rcptTo(c, recipient: "Unknown-42@gmail.com", now: 0).reply
        #expect(unknown?.code == 550 && unknown?.enhanced == "5.1.1" && unknown?.close == false)
        #expect(unknown?.lines == ["The email account that you tried to reach does not exist. gsmtp"])
        #expect(policy.rcptTo(c, recipient: "full-1@gmail.com", now: 0).reply?.code == 452)
        #expect(policy.rcptTo(c, recipient: "full-12@gmail.com", now: 0) == .accept)
        #expect(policy.rcptTo(c, recipient: "someone@gmail.com", now: 0) == .accept)
        #expect(c.acceptedRecipients == 2)
        let counters = gmail.ips["10.0.0.1"]!.counters
        #expect(counters.recipientsRejected[.unknownUser] == 1 && counters.recipientsDeferred[.mailboxFull] == 1)
        #expect(counters.recipientsAccepted == 2)
    }

    @Test func recipientRuleAtDataAcceptsTheRcptAndRefusesTheMessage() {
        var p = Self.gmailLike()
        p.recipientRules = [SinkRecipientRule(kind: .unknownUser, patterns: [SinkPattern("unknown*")],
                                              reply: Self.reply("554 delivery error: dd This user doesn't have a {domain} account ({rcpt})"),
                                              phase: .data)]
        let (policy, yahoo) = policy(p)
        let (c, _) = policy.connect(provider: yahoo, ip: "10.0.0.1", now: 0)
        _ = policy.mailFrom(c, sender: "s@example.com", now: 0)
        #expect(policy.rcptTo(c, recipient: "unknown1@yahoo.com", now: 0) == .accept)
        let r = policy.endOfData(c, size: 10, now: 0).reply
        #expect(r?.text == "554 delivery error: dd This user doesn't have a yahoo.com account (unknown1@yahoo.com)")
        #expect(yahoo.ips["10.0.0.1"]?.counters.messagesRejected[.unknownUser] == 1)
        // The next transaction starts clean.
        #expect(send(policy, c, at: 1) == nil)
    }

    @Test func greylistDefersTheFirstTryAndPassesTheRetryAfterTheDelay() {
        let (policy, gmail) = policy()
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        _ = policy.mailFrom(c, sender: "s@example.com", now: 0)
        let first = policy.rcptTo(c, recipient: "grey@gmail.com", now: 0).reply
        #expect(first?.text == "450 4.2.0 <grey@gmail.com>: Recipient address rejected: Greylisted")
        // Too early: still deferred.
        #expect(policy.rcptTo(c, recipient: "grey@gmail.com", now: 100 * Self.s).reply?.reason == .greylisted)
        // A different sender is a different triple.
        _ = policy.mailFrom(c, sender: "other@example.com", now: 301 * Self.s)
        #expect(policy.rcptTo(c, recipient: "grey@gmail.com", now: 301 * Self.s).reply?.reason == .greylisted)
        // The retry after the delay passes, and keeps passing.
        _ = policy.mailFrom(c, sender: "s@example.com", now: 301 * Self.s)
        #expect(policy.rcptTo(c, recipient: "grey@gmail.com", now: 301 * Self.s) == .accept)
        #expect(policy.rcptTo(c, recipient: "grey@gmail.com", now: 302 * Self.s) == .accept)
    }

    @Test func perMailboxRateDefersTheBusyRecipient() {
        let (policy, gmail) = policy()
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        _ = policy.mailFrom(c, sender: "s@example.com", now: 0)
        #expect(policy.rcptTo(c, recipient: "busy@gmail.com", now: 0) == .accept)
        #expect(policy.rcptTo(c, recipient: "busy@gmail.com", now: 0) == .accept)
        #expect(policy.rcptTo(c, recipient: "busy@gmail.com", now: 0).reply?.enhanced == "4.2.1")
        #expect(policy.rcptTo(c, recipient: "busy2@gmail.com", now: 0) == .accept)
        #expect(policy.rcptTo(c, recipient: "busy@gmail.com", now: 31 * Self.s) == .accept)
    }

    @Test func scriptedLocalPartsAnswerWithTheirCode() {
        let (policy, gmail) = policy()
        let (c, _) = policy.connect(provider: gmail, ip: "10.0.0.1", now: 0)
        _ = policy.mailFrom(c, sender: "", now: 0)
        let r = policy.rcptTo(c, recipient: "450-anything@gmail.com", now: 0).reply
        #expect(r?.code == 450 && r?.enhanced == "4.0.0" && r?.close == false && r?.reason == .scripted)
        #expect(policy.rcptTo(c, recipient: "550@gmail.com", now: 0).reply?.code == 550)
        #expect(policy.rcptTo(c, recipient: "421-bye@gmail.com", now: 0).reply?.close == true)
        #expect(policy.rcptTo(c, recipient: "250-fine@gmail.com", now: 0) == .accept)
        #expect(policy.rcptTo(c, recipient: "4500@gmail.com", now: 0) == .accept)
    }

    @Test func randomFailuresAndDropsAreDeterministicPerSeed() {
        var p = SinkISPProfile(name: "flaky")
        p.randomFailures = [SinkRandomFailure(probability: 0.3, phase: .data, reply: Self.reply("451 4.3.0 Temporary failure"))]
        p.dropDuringData = 0.2
        func run() -> [String] {
            let policy = SinkPolicy(profiles: [p], timeScale: 1, seed: 42)
            let (c, _) = policy.connect(provider: policy.providers[0], ip: "10.0.0.1", now: 0)
            var out: [String] = []
            for _ in 0..<200 {
                _ = policy.mailFrom(c, sender: "s@x", now: 0)
                _ = policy.rcptTo(c, recipient: "r@y", now: 0)
                if policy.dataCommand(c, now: 0) == .drop { out.append("drop"); continue }
                out.append(policy.endOfData(c, size: 1, now: 0).reply.map { String($0.code) } ?? "ok")
            }
            return out
        }
        let a = run(), b = run()
        #expect(a == b)
        #expect(a.contains("drop") && a.contains("451") && a.contains("ok"))
    }

    @Test func latencyDistributionsAreScaledAndBounded() {
        var p = SinkISPProfile(name: "slow")
        p.bannerLatency = .fixed(2)
        p.commandLatency = .uniform(1, 3)
        p.dataLatency = .exponential(0.5)
        let policy = SinkPolicy(profiles: [p], timeScale: 0.01, seed: 1)
        let (c, _) = policy.connect(provider: policy.providers[0], ip: "10.0.0.1", now: 0)
        #expect(policy.latency(c, .greeting) == 20_000_000)
        for _ in 0..<100 {
            let l = policy.latency(c, .mail)
            #expect(l >= 10_000_000 && l <= 30_000_000)
        }
        var total: UInt64 = 0
        for _ in 0..<1000 { total += policy.latency(c, .data) }
        #expect(total > 0)
    }
}
