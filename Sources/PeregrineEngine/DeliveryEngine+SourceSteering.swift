import PeregrineSMTP

/// `disable-source-ip` with a `<virtual-mta-pool>`: the disabled member's
/// source IP is not used for the domain for a while, and the pool's other
/// members carry its mail. Every member's queue for a domain lives on one
/// loop (the daemon shards a pooled VMTA's queues by pool and domain), so
/// moving items is a local hand-over. With no member left (or mail that was
/// not routed through the pool) the queue is suspended, as it always was.
extension DeliveryEngine {
    /// Until when this queue's source IP is disabled for its domain (nil: it is not).
    public func sourceDisabledUntil(_ key: QueueKey) -> UInt64? {
        guard let t = disabledUntil[key], t > loop.now else { return nil }
        return t
    }

    /// The queue that should take `message`'s recipients instead of `q`, or nil
    /// when `q` may be used (its source is not disabled, or the message did not
    /// come through `q`'s pool, or every other member is disabled for the domain too).
    func steeringTarget(from q: DeliveryQueue, for message: QueuedMessage, now: UInt64) -> DeliveryQueue? {
        // Fast path: nothing disabled on this loop (the usual case, checked per submit).
        guard !disabledUntil.isEmpty, let until = disabledUntil[q.key], until > now, let poolName = message.pool,
              let (name, members) = policies.pool(ofVMTA: q.key.vmta), name == poolName else { return nil }
        return otherMember(than: q, in: members, now: now)
    }

    /// The next member after `q`'s VMTA whose source is not disabled for the
    /// domain (the next, so that several disabled members do not all land on the first).
    private func otherMember(than q: DeliveryQueue, in members: [String], now: UInt64) -> DeliveryQueue? {
        guard let start = members.firstIndex(of: q.key.vmta) else { return nil }
        for step in 1..<max(1, members.count) {
            let key = QueueKey(domain: q.key.domain, vmta: members[(start + step) % members.count])
            if let t = disabledUntil[key], t > now { continue }
            return queue(for: key)
        }
        return nil
    }

    /// The pattern-list action: disable `q`'s source for its domain, suspend
    /// `q` (mail that cannot move waits there), and move its pool mail on;
    /// recipients in flight move when their transaction ends (`complete`).
    func disableSource(of q: DeliveryQueue, for ns: UInt64, reply: SMTPReply, now: UInt64) {
        let until = now &+ ns
        // Each transaction in flight on the source may bring the same reply: log the change only.
        let wasDisabled = (disabledUntil[q.key] ?? 0) > now
        disabledUntil[q.key] = max(disabledUntil[q.key] ?? 0, until)
        q.suspend(until: until, reason: "source IP disabled: \(reply.description)")
        var moved = 0
        var target: DeliveryQueue?
        if let (name, members) = policies.pool(ofVMTA: q.key.vmta), let other = otherMember(than: q, in: members, now: now) {
            target = other
            for item in q.remove(where: { $0.pool == name }) {
                moved += item.recipients.count
                other.enqueue(item)
            }
        }
        if !wasDisabled || moved > 0 {
            observer.sourceDisabled(q, until: until, reason: reply.description, movedTo: target?.key.vmta, recipientsMoved: moved)
        }
        if let target { kick(target) }
    }
}
