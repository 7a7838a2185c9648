import Testing
@testable import PeregrineSpool
@testable import PeregrineEngine

private let second: UInt64 = 1_000_000_000

private func message(_ id: UInt64, rcpts: [String], receivedAt: UInt64 = 0) -> QueuedMessage {
    QueuedMessage(id: MessageID(hi: 0, lo: id), sender: "s@example.com", recipients: rcpts.map { .init(address: $0) },
                  vmta: "vmta1", jobId: nil, envId: nil, receivedAtWall: 0, receivedAt: receivedAt,
                  bodySize: 100, stream: 0)
}

private func item(_ id: UInt64, receivedAt: UInt64 = 0) -> DeliveryItem {
    DeliveryItem(message: message(id, rcpts: ["u\(id)@gmail.com"], receivedAt: receivedAt), recipients: [0])
}

@Suite struct EngineQueueTests {
    @Test func queueKeyPatterns() {
        let k = QueueKey(domain: "Gmail.COM", vmta: "vmta1")
        #expect(k.description == "gmail.com/vmta1")
        #expect(k.matches(pattern: "gmail.com/*"))
        #expect(k.matches(pattern: "*/vmta1"))
        #expect(k.matches(pattern: "*"))
        #expect(k.matches(pattern: "g*.com/vm*"))
        #expect(!k.matches(pattern: "yahoo.com/*"))
        #expect(!k.matches(pattern: "gmail.com/vmta2"))
    }

    @Test func readyItemsComeOutInOrderAndCapPerConnection() {
        var p = DomainSettings()
        p.maxMsgPerConnection = 2
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        for i in 1...3 { q.enqueue(item(UInt64(i))) }
        guard case .item(let a) = q.take(now: 0, messagesOnConnection: 0) else { Issue.record("expected item"); return }
        guard case .item(let b) = q.take(now: 0, messagesOnConnection: 1) else { Issue.record("expected item"); return }
        #expect(a.message.id.lo == 1 && b.message.id.lo == 2)
        guard case .close = q.take(now: 0, messagesOnConnection: 2) else { Issue.record("cap must close"); return }
        #expect(q.readyRecipients == 1)
    }

    @Test func connectionsToOpenHonoursMaxSmtpOutAndBackoff() {
        var p = DomainSettings()
        p.maxSMTPOut = 5
        p.backoffMaxSMTPOut = 1
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        for i in 1...50 { q.enqueue(item(UInt64(i))) }
        #expect(q.connectionsToOpen(now: 0) == 5)
        q.connections = 5
        #expect(q.connectionsToOpen(now: 0) == 0)
        q.enterBackoff(now: 0)
        // Over the backoff cap: connections are told to close on their next take.
        guard case .close = q.take(now: 0, messagesOnConnection: 0) else { Issue.record("expected close"); return }
        q.connections = 0
        #expect(q.connectionsToOpen(now: 0) == 1)
    }

    @Test func aLearnedConnectionLimitCapsOpeningUntilItExpires() {
        var p = DomainSettings()
        p.maxSMTPOut = 6
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        for i in 1...50 { q.enqueue(item(UInt64(i))) }
        // Three of six connections were refused at the greeting: three remain.
        q.connections = 3
        q.limitConnections(to: 3, until: 10 * second)
        #expect(q.maxConnections(now: 0) == 3)
        #expect(q.connectionsToOpen(now: 0) == 0)
        // The open ones keep taking work (no close, no suspension).
        guard case .item = q.take(now: 0, messagesOnConnection: 0) else { Issue.record("expected item"); return }
        #expect(q.isSendable(now: 0))
        // Once the limit expires, max-smtp-out applies again.
        #expect(q.maxConnections(now: 10 * second) == 6)
        #expect(q.connectionsToOpen(now: 10 * second) == 3)
    }

    @Test func messageRateIsPaced() {
        var p = DomainSettings()
        p.maxMsgRate = .limited(count: 10, per: .seconds(1))
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        for i in 1...300 { q.enqueue(item(UInt64(i))) }
        var now: UInt64 = 1_000 * second
        var sent = 0
        // Over 10 simulated seconds at most ~10/s (plus the burst the limiter allows) get through.
        let end = now + 10 * second
        while now < end {
            switch q.take(now: now, messagesOnConnection: 0) {
            case .item: sent += 1
            case .wait(let until): #expect(until > now); now = until
            default: Issue.record("unexpected take"); return
            }
        }
        #expect(sent >= 95 && sent <= 105)
    }

    @Test func transientFailureFollowsRetryScheduleThenExpires() {
        var p = DomainSettings()
        p.retryAfter = RetrySchedule([.seconds(10), .seconds(20)])
        p.bounceAfter = .seconds(45)
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        q.enqueue(item(1, receivedAt: 0))
        guard case .item(let it) = q.take(now: 0, messagesOnConnection: 0) else { Issue.record("item"); return }
        q.deferItem(it, now: 0)
        #expect(q.nextWakeup(now: 0) == 10 * second)
        var expired: [DeliveryItem] = []
        q.promoteDue(now: 9 * second, expired: &expired)
        #expect(q.readyItems == 0)
        q.promoteDue(now: 10 * second, expired: &expired)
        #expect(q.readyItems == 1 && expired.isEmpty)
        guard case .item(let it2) = q.take(now: 10 * second, messagesOnConnection: 0) else { Issue.record("item"); return }
        q.deferItem(it2, now: 10 * second)
        #expect(q.nextWakeup(now: 10 * second) == 30 * second)  // second step: 20 s
        q.promoteDue(now: 30 * second, expired: &expired)
        guard case .item(let it3) = q.take(now: 30 * second, messagesOnConnection: 0) else { Issue.record("item"); return }
        q.deferItem(it3, now: 30 * second)
        // 30 + 20 = 50 > expiry 45: clamped to the expiry, and then bounced.
        #expect(q.nextWakeup(now: 30 * second) == 45 * second)
        q.promoteDue(now: 45 * second, expired: &expired)
        #expect(expired.count == 1 && q.isEmpty)
    }

    @Test func backoffUsesBackoffRetryAndReturnsToNormal() {
        var p = DomainSettings()
        p.backoffRetryAfter = RetrySchedule([.seconds(60)])
        p.backoffToNormalAfter = .seconds(120)
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        q.enterBackoff(now: 5 * second)
        q.deferItem(item(1, receivedAt: 0), now: 5 * second)
        #expect(q.nextWakeup(now: 5 * second) == 65 * second)
        q.checkBackoffExpiry(now: 100 * second)
        #expect(q.isBackoff)
        #expect(q.backoffEnds() == 125 * second)
        q.checkBackoffExpiry(now: 125 * second)
        #expect(!q.isBackoff)
    }

    @Test func backoffToNormalAfterDelivery() {
        var p = DomainSettings()
        p.backoffToNormalAfterDelivery = true
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: p)
        q.enterBackoff(now: 0)
        q.noteDelivered(1, now: 1)
        #expect(!q.isBackoff)
    }

    @Test func pausedAndSuspendedQueuesSendNothing() {
        let q = DeliveryQueue(key: QueueKey(domain: "yahoo.com", vmta: "v"), policy: DomainSettings())
        q.enqueue(item(1))
        q.isPaused = true
        #expect(q.connectionsToOpen(now: 0) == 0)
        guard case .close = q.take(now: 0, messagesOnConnection: 0) else { Issue.record("paused must close"); return }
        q.resume()
        q.suspend(until: 100 * second, reason: "TSS04")
        #expect(q.connectionsToOpen(now: 50 * second) == 0)
        #expect(q.nextWakeup(now: 50 * second) == 100 * second)
        #expect(q.connectionsToOpen(now: 100 * second) == 1)
        q.suspend(until: 200 * second, reason: "again")
        q.retryNow()
        #expect(q.isSendable(now: 101 * second))
    }

    @Test func deleteByPredicateAndAll() {
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: DomainSettings())
        for i in 1...4 { q.enqueue(item(UInt64(i))) }
        q.delayUntil(item(5), 10 * second)
        q.delayUntil(item(6), 20 * second)
        let removed = q.remove { $0.id.lo % 2 == 0 }
        #expect(Set(removed.map(\.message.id.lo)) == [2, 4, 6])
        #expect(q.readyRecipients == 2 && q.delayedRecipients == 1)
        #expect(q.removeAll().count == 3)
        #expect(q.isEmpty)
    }

    @Test func ringBufferAndHeap() {
        var r = RingBuffer<Int>(capacity: 2)
        for i in 0..<10 { r.append(i) }
        r.prepend(-1)
        var out: [Int] = []
        while let x = r.popFirst() { out.append(x) }
        #expect(out == [-1] + Array(0..<10))
        var h = DeadlineHeap<Int>()
        for (i, d) in [5, 1, 9, 1, 3].enumerated() { h.insert(i, at: UInt64(d)) }
        var order: [Int] = []
        while let x = h.popFirst() { order.append(x.element) }
        #expect(order == [1, 3, 4, 0, 2])
    }
}
