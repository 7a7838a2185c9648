import Testing
import PeregrineIO
@testable import PeregrineSpool
@testable import PeregrineEngine
@testable import PeregrineDaemon

private func item(_ id: UInt64, _ domain: String) -> DeliveryItem {
    DeliveryItem(message: QueuedMessage(id: MessageID(hi: 0, lo: id), sender: "s@example.com",
                                        recipients: [.init(address: "u\(id)@\(domain)")], vmta: "v", jobId: nil, envId: nil,
                                        receivedAtWall: 0, receivedAt: 0, bodySize: 100, stream: 0),
                 recipients: [0])
}

/// MX rollup as pure state: sites share one throttle across their member
/// queues, take from the members in turn, and carry the strictest limits.
@Suite struct EngineSiteTests {
    static func site(_ policies: [String: DomainSettings]) throws -> (DeliverySite, [String: DeliveryQueue]) {
        var queues: [String: DeliveryQueue] = [:]
        let hosts = [RouteHost(name: "MX1.olc.test", address: try SocketAddress(ip: "127.0.0.1", port: 25))]
        var site: DeliverySite?
        for (domain, p) in policies.sorted(by: { $0.key < $1.key }) {
            let q = DeliveryQueue(key: QueueKey(domain: domain, vmta: "v"), policy: p)
            queues[domain] = q
            if let s = site { s.add(q, now: 0) } else {
                site = DeliverySite(key: DeliverySiteKey(vmta: "v", hosts: hosts, policy: p), first: q, now: 0)
            }
        }
        return (try #require(site), queues)
    }

    @Test func membersShareOneConnectionBudgetAndTakeInTurn() throws {
        var p = DomainSettings()
        p.maxSMTPOut = 3
        let (site, qs) = try Self.site(["a.test": p, "b.test": p, "c.test": p])
        #expect(site.key.description == "[mx1.olc.test:25]/v")
        for i in 0..<4 { qs["a.test"]!.enqueue(item(UInt64(i), "a.test")) }
        qs["b.test"]!.enqueue(item(10, "b.test"))
        // 5 ready items across the members, one budget of 3.
        #expect(site.connectionsToOpen(now: 0) == 3)
        qs["b.test"]!.connections += 3
        #expect(site.throttle.connections == 3 && qs["a.test"]!.connections == 3)
        #expect(site.connectionsToOpen(now: 0) == 0)
        // Members in turn: a, b, then a again (c has nothing).
        var order: [String] = []
        for _ in 0..<3 {
            let (take, from) = site.take(now: 0, messagesOnConnection: 0)
            guard case .item = take, let from else { Issue.record("expected an item"); return }
            order.append(from.key.domain)
        }
        #expect(order == ["a.test", "b.test", "a.test"])
        #expect(qs["a.test"]!.readyRecipients == 2 && qs["b.test"]!.readyRecipients == 0)
    }

    @Test func aSuspensionOrBackoffOnOneMemberHoldsTheSite() throws {
        var p = DomainSettings()
        p.maxSMTPOut = 4
        p.backoffMaxSMTPOut = 1
        let (site, qs) = try Self.site(["a.test": p, "b.test": p])
        qs["b.test"]!.enqueue(item(1, "b.test"))
        qs["a.test"]!.enterBackoff(now: 0)
        #expect(qs["b.test"]!.isBackoff && qs["b.test"]!.maxConnections(now: 0) == 1)
        qs["a.test"]!.suspend(until: 100, reason: "421 busy")
        #expect(!qs["b.test"]!.isSendable(now: 50))
        #expect(site.connectionsToOpen(now: 50) == 0)
        guard case .close = site.take(now: 50, messagesOnConnection: 0).0 else { Issue.record("suspended site must close"); return }
        #expect(site.connectionsToOpen(now: 100) == 1)
    }

    @Test func aPausedMemberIsSkippedButTheOthersGoOn() throws {
        let (site, qs) = try Self.site(["a.test": DomainSettings(), "b.test": DomainSettings()])
        qs["a.test"]!.enqueue(item(1, "a.test"))
        qs["b.test"]!.enqueue(item(2, "b.test"))
        qs["a.test"]!.isPaused = true
        #expect(site.readyItems == 1)
        let (take, from) = site.take(now: 0, messagesOnConnection: 0)
        guard case .item = take else { Issue.record("expected an item"); return }
        #expect(from === qs["b.test"])
        guard case .idle = site.take(now: 0, messagesOnConnection: 1).0 else { Issue.record("expected idle"); return }
    }

    @Test func theSiteCarriesTheStrictestLimitsOfItsMembers() throws {
        var a = DomainSettings(), b = DomainSettings()
        a.maxSMTPOut = 5; b.maxSMTPOut = 3
        a.maxMsgPerConnection = 50; b.maxMsgPerConnection = 0
        a.maxMsgRate = .limited(count: 10, per: .seconds(1)); b.maxMsgRate = .limited(count: 100, per: .seconds(60))
        b.maxConnectRate = .limited(count: 5, per: .seconds(1))
        a.backoffMaxSMTPOut = 2
        a.backoffToNormalAfter = .seconds(60); b.backoffToNormalAfter = .seconds(30)
        let s = DeliverySite.mostRestrictive([a, b])
        #expect(s.maxSMTPOut == 3)
        #expect(s.maxSMTPOut(inBackoff: true) == 2)
        #expect(s.maxMsgPerConnection == 50)
        #expect(s.maxMsgRate == .limited(count: 100, per: .seconds(60)))
        #expect(s.maxConnectRate == .limited(count: 5, per: .seconds(1)))
        #expect(s.backoffToNormalAfter == .seconds(60))
        // Symmetric: the order of the members does not matter for the limits.
        let t = DeliverySite.mostRestrictive([b, a])
        #expect(t.maxSMTPOut == s.maxSMTPOut && t.maxMsgRate == s.maxMsgRate && t.maxMsgPerConnection == s.maxMsgPerConnection)
    }

    @Test func mxRollupIsParsedPerDomainAndOffByDefault() throws {
        let config = try PeregrineConfig.parse("""
            domain-macro olc hotmail.com,outlook.com
            <domain $olc>
                mx-rollup yes
            </domain>
            """, file: "r.conf")
        #expect(config.settings(forDomain: "hotmail.com").mxRollup)
        #expect(!config.settings(forDomain: "gmail.com").mxRollup)
        do {
            _ = try PeregrineConfig.parse("<domain x.test>\n    mx-rollup maybe\n</domain>", file: "r.conf")
            Issue.record("mx-rollup maybe must be refused")
        } catch {
            #expect(error.description.hasPrefix("r.conf:2:"), "\(error)")
        }
    }
}
