#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineAccounting

/// Connection caps shared by several queues (`total-max-smtp-out`, a
/// `<virtual-mta>`'s `max-smtp-out`), `queue-priority` when those slots are
/// scarce, and `smtp-553-means-invalid-mailbox`, judged by the sink's
/// counts and the accounting file. Scenarios 12-15 (127.P.12-15.x).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonConnectionBudgetTests {
    typealias Scenario = DaemonEndToEndTests.Scenario
    static let domains = ["one.test", "two.test", "three.test", "four.test"]

    /// One receiver for four domains that refuses a third concurrent
    /// connection from a sending IP at the greeting; sessions linger at the
    /// banner so that connections overlap.
    static func startCappedSink(_ s: Scenario, ip: String) throws -> UInt16 {
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("cap", domains: domains.joined(separator: " "), mx: [ip], """
                max-connections 2 greeting "421 4.7.0 Too many connections from {ip}, try again later"
                latency banner fixed 100ms
                latency data fixed 20ms
            """))
        s.sink = sink
        return try sink.address("cap").1
    }

    static func domainBlocks(ip: String, port: UInt16, maxSMTPOut: Int = 4) -> String {
        domains.map { """
            <domain \($0)>
                route [\(ip)]:\(port)
                max-smtp-out \(maxSMTPOut)
                max-rcpt-per-transaction 1
                retry-after 1s
            </domain>
            """ }.joined(separator: "\n")
    }

    /// Four queues of 4 connections each, 16 at once without a shared cap;
    /// the receiver would refuse all but 2. Every message has recipients in
    /// all four domains so the queues want connections at the same moment.
    static func injectAcrossDomains(_ d: DaemonProcess, messages: Int, perDomain: Int) throws -> Int {
        let c = try d.client()
        var n = 0
        for m in 0..<messages {
            let rcpts = domains.flatMap { dom in (0..<perDomain).map { "r\(m)-\($0)@\(dom)" } }
            #expect(try c.send(to: rcpts, id: "budget-\(m)") == nil)
            n += rcpts.count
        }
        c.quit()
        return n
    }

    static func expectCapHeld(_ s: Scenario, sourceIP: String, expected: Int) throws {
        #expect(s.waitForFinals(expected, timeout: 90), "\(s.diagnostics)")
        let finals = s.records.finals
        #expect(finals.count == expected && finals.allSatisfy { $0.type == .delivered },
                "\(finals.filter { $0.type != .delivered }.map(\.dsnDiag))")
        let ip = try #require(s.sink).ipStats("cap", sourceIP)
        let peak = ip["peak_concurrent_connections"] as? Int ?? -1
        #expect(peak >= 1 && peak <= 2, "peak \(peak)")
        // The receiver never had to refuse a session: the cap held on every loop.
        #expect((ip["sessions_refused"] as? [String: Any] ?? [:]).isEmpty, "\(ip)")
        #expect(ip["messages_accepted"] as? Int == expected, "\(ip)")
    }

    @Test(arguments: BackendKind.testable)
    func totalMaxSMTPOutCapsEveryQueueTogether(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("budget-total", 12, kind)
        let mx = E2E.ip(12, kind, host: 1)
        let port = try Self.startCappedSink(s, ip: mx)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            total-max-smtp-out 2
            \(Self.domainBlocks(ip: mx, port: port))
            """))
        let expected = try Self.injectAcrossDomains(d, messages: 3, perDomain: 6)
        try Self.expectCapHeld(s, sourceIP: "127.0.0.10", expected: expected)
        // /status shows the cap, and every slot back once the connections closed.
        #expect(E2E.waitUntil(30) {
            let budgets = (try? E2E.json(try E2E.httpGet("\(s.listenIP):8125", "/status")))?["connectionBudgets"] as? [[String: Any]]
            return budgets?.count == 1 && budgets?[0]["name"] as? String == "total-max-smtp-out"
                && budgets?[0]["limit"] as? Int == 2 && budgets?[0]["used"] as? Int == 0
        }, "\(d.log)")
    }

    @Test(arguments: BackendKind.testable)
    func virtualMTAMaxSMTPOutCapsItsQueuesTogether(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("budget-vmta", 13, kind)
        let mx = E2E.ip(13, kind, host: 1)
        let port = try Self.startCappedSink(s, ip: mx)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, defaultVMTA: "capped", """
            <virtual-mta capped>
                smtp-source-host 127.0.0.12 capped.test
                max-smtp-out 2
            </virtual-mta>
            \(Self.domainBlocks(ip: mx, port: port))
            """))
        let expected = try Self.injectAcrossDomains(d, messages: 3, perDomain: 6)
        try Self.expectCapHeld(s, sourceIP: "127.0.0.12", expected: expected)
    }

    /// One slot, one connection per message: after the first delivery every
    /// freed slot goes to the waiting queue of higher priority, so all of
    /// hi.test is delivered before the rest of lo.test, though lo.test's
    /// recipients came first in the message. One loop, so that the
    /// accounting file's order is the delivery order.
    @Test(arguments: BackendKind.testable)
    func scarceSlotsGoToTheHigherPriorityQueueFirst(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("budget-prio", 14, kind)
        let mx = E2E.ip(14, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("prio", domains: "hi.test lo.test", mx: [mx], """
                latency data fixed 10ms
            """))
        s.sink = sink
        let port = try sink.address("prio").1
        let block = { (domain: String, priority: Int) in """
            <domain \(domain)>
                route [\(mx)]:\(port)
                max-smtp-out 4
                max-rcpt-per-transaction 1
                max-msg-per-connection 1
                queue-priority \(priority)
            </domain>
            """ }
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            total-max-smtp-out 1
            \(block("lo.test", 10))
            \(block("hi.test", 90))
            """), threads: 1)
        let c = try d.client()
        let rcpts = (0..<8).map { "l\($0)@lo.test" } + (0..<8).map { "h\($0)@hi.test" }
        #expect(try c.send(to: rcpts, id: "prio") == nil)
        c.quit()
        #expect(s.waitForFinals(16, timeout: 90), "\(s.diagnostics)")
        let order = s.records.finals.filter { $0.type == .delivered }.map { $0.rcpt.hasSuffix("@hi.test") ? "h" : "l" }
        #expect(order.count == 16)
        // Whichever queue took the only slot first, hi.test holds every slot after it.
        let afterFirst = order.dropFirst()
        let lastHi = afterFirst.lastIndex(of: "h") ?? afterFirst.startIndex
        let firstLo = afterFirst.firstIndex(of: "l") ?? afterFirst.endIndex
        #expect(lastHi < firstLo, "delivery order \(order.joined())")
    }

    /// `max-cold-virtual-mta-msg 3/d`: of eight messages to warm.test from
    /// vmta1, the first three go through vmta1-cold (its own source address,
    /// as the receiver sees it) and the rest through vmta1; cold.test, with
    /// no such limit, never uses the cold VMTA.
    @Test(arguments: BackendKind.testable)
    func theFirstMessagesOfTheDayGoThroughTheColdVirtualMTA(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("budget-cold", 16, kind)
        let mx = E2E.ip(16, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("warm", domains: "warm.test plain.test", mx: [mx]))
        s.sink = sink
        let port = try sink.address("warm").1
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <virtual-mta vmta1-cold>
                smtp-source-host 127.0.0.13 cold.vmta1.test
            </virtual-mta>
            <domain warm.test>
                route [\(mx)]:\(port)
                max-cold-virtual-mta-msg 3/d
            </domain>
            <domain plain.test>
                route [\(mx)]:\(port)
            </domain>
            """))
        let c = try d.client()
        for m in 0..<8 { #expect(try c.send(to: ["u\(m)@warm.test", "u\(m)@plain.test"], id: "cold-\(m)") == nil) }
        c.quit()
        #expect(s.waitForFinals(16, timeout: 60), "\(s.diagnostics)")
        let finals = s.records.finals
        #expect(finals.allSatisfy { $0.type == .delivered }, "\(finals.map(\.dsnDiag))")
        let warm = finals.filter { $0.rcpt.hasSuffix("@warm.test") }, plain = finals.filter { $0.rcpt.hasSuffix("@plain.test") }
        #expect(warm.filter { $0.vmta == "vmta1-cold" }.count == 3 && warm.filter { $0.vmta == "vmta1" }.count == 5, "\(warm.map(\.vmta))")
        #expect(plain.allSatisfy { $0.vmta == "vmta1" }, "\(plain.map(\.vmta))")
        #expect(warm.filter { $0.vmta == "vmta1-cold" }.allSatisfy { $0.dlvSourceIp == "127.0.0.13" })
        #expect(try sink.ipStats("warm", "127.0.0.13")["messages_accepted"] as? Int == 3)
    }

    /// A 553 to RCPT without an enhanced code is a bad mailbox (5.1.1) by
    /// default, as in PowerMTA; `smtp-553-means-invalid-mailbox no` keeps the
    /// reply as it came (5.0.0, classified by its text).
    @Test(arguments: BackendKind.testable)
    func a553ToRcptMeansAnInvalidMailboxUnlessTurnedOff(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let s = try Scenario("budget-553", 15, kind)
        let mx = E2E.ip(15, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("relayonly", domains: "yes553.test no553.test", mx: [mx], """
                unknown-user "553 sorry, that domain isn't in my list of allowed rcpthosts" nobody*
            """))
        s.sink = sink
        let port = try sink.address("relayonly").1
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain yes553.test>
                route [\(mx)]:\(port)
            </domain>
            <domain no553.test>
                route [\(mx)]:\(port)
                smtp-553-means-invalid-mailbox no
            </domain>
            """))
        let c = try d.client()
        #expect(try c.send(to: ["nobody@yes553.test", "nobody@no553.test", "someone@yes553.test"], id: "553") == nil)
        c.quit()
        #expect(s.waitForFinals(3, timeout: 60), "\(s.diagnostics)")
        let finals = s.records.finals
        let yes = try #require(finals.first { $0.rcpt == "nobody@yes553.test" })
        let no = try #require(finals.first { $0.rcpt == "nobody@no553.test" })
        #expect(yes.type == .bounced && yes.dsnStatus.hasPrefix("5.1.1") && yes.bounceCat == "bad-mailbox", "\(yes)")
        #expect(no.type == .bounced && !no.dsnStatus.hasPrefix("5.1.1") && no.bounceCat != "bad-mailbox", "\(no)")
        // The diagnostic keeps the receiver's text; the yes case carries the 5.1.1 it was read as.
        #expect(yes.dsnDiag.hasPrefix("smtp;553 5.1.1 sorry") && no.dsnDiag.hasPrefix("smtp;553 sorry"), "\(yes.dsnDiag) / \(no.dsnDiag)")
        #expect(finals.first { $0.rcpt == "someone@yes553.test" }?.type == .delivered)
    }
}
