import PeregrineIO

/// Shared connection caps (`total-max-smtp-out`, a VMTA's `max-smtp-out`) and
/// `queue-priority` (ConnectionBudget.swift): a connection holds one slot of
/// every budget over its VMTA from `open` until it closes.
extension DeliveryEngine {
    /// How many of `wanted` new connections `q` may open now. Slots reserved
    /// for it by a freed connection are used first. Short of slots, the queue
    /// waits in its budgets, and lower-priority connections of this loop are
    /// asked to finish their transaction and quit (PowerMTA's priority
    /// interruption, never during a transfer).
    func takeConnectionSlots(_ wanted: Int, for q: DeliveryQueue) -> Int {
        let budgets = policies.connectionBudgets(forVMTA: q.key.vmta)
        guard !budgets.isEmpty, wanted > 0 else { return wanted }
        let waiter = ConnectionBudget.WaiterID(engine: ObjectIdentifier(self), queue: q.key)
        let priority = q.policy.queuePriority
        var got: [Int] = []
        var n = wanted
        for b in budgets {
            let key = ReservedSlotKey(queue: q.key, budget: ObjectIdentifier(b))
            let reserved = min(n, reservedSlots[key] ?? 0)
            if reserved > 0 { reservedSlots[key] = (reservedSlots[key] ?? 0) - reserved }
            if reservedSlots[key] == 0 { reservedSlots[key] = nil }
            let more = reserved < n ? b.take(n - reserved, priority: priority, waiter: waiter, granted: slotGrant(b, queue: q.key)) : 0
            got.append(reserved + more)
            n = min(n, reserved + more)
        }
        // A connection needs a slot of every budget: give back what only some granted.
        for (b, g) in zip(budgets, got) where g > n { b.give(g - n) }
        if n < wanted { interruptLowerPriority(than: q, count: wanted - n) }
        return n
    }

    /// Gives back the slots of `count` connections of `vmta` that closed or never opened.
    func giveConnectionSlots(_ count: Int, vmta: String) {
        guard count > 0 else { return }
        for b in policies.connectionBudgets(forVMTA: vmta) { b.give(count) }
    }

    /// The callback a budget calls when it reserves a slot for `queue`: the
    /// slot is recorded on this loop and the queue kicked; if the kick opens
    /// nothing (the queue emptied meanwhile) the slot goes back at once, to
    /// the next waiter.
    private func slotGrant(_ budget: ConnectionBudget, queue key: QueueKey) -> @Sendable () -> Void {
        let engine = LoopConfined(self)
        let budgetBox = LoopConfined(budget)
        let loopBox = LoopConfined(loop)
        return {
            loopBox.value.execute {
                let e = engine.value, b = budgetBox.value
                let slot = ReservedSlotKey(queue: key, budget: ObjectIdentifier(b))
                e.reservedSlots[slot, default: 0] += 1
                if let q = e.queues[key] { e.kick(q) }
                if let left = e.reservedSlots.removeValue(forKey: slot), left > 0 { b.give(left) }
            }
        }
    }

    /// Asks up to `count` connections on this loop that share a budget with
    /// `q` to quit after their current transaction: idle ones of any other
    /// queue first (they hold a slot for nothing), then busy ones of
    /// lower-priority queues, lowest first; queues with
    /// `allow-priority-interruption no` keep their busy connections.
    private func interruptLowerPriority(than q: DeliveryQueue, count: Int) {
        let priority = q.policy.queuePriority
        let budgets = Set(policies.connectionBudgets(forVMTA: q.key.vmta).map(ObjectIdentifier.init))
        let sharing = openConnections.filter { c in
            c.queue !== q && !c.closed
                && policies.connectionBudgets(forVMTA: c.queue.key.vmta).contains { budgets.contains(ObjectIdentifier($0)) }
        }
        // Connections already asked to quit will free their slots: count them,
        // so that a starved queue kicked again does not retire more each time.
        let quitting = sharing.filter(\.isRetired).count
        guard count > quitting else { return }
        let idle = sharing.filter { !$0.isRetired && $0.isIdle }
        let lower = sharing.filter { c in
            !c.isRetired && !c.isIdle && c.queue.policy.queuePriority < priority && c.queue.policy.allowPriorityInterruption
        }.sorted { $0.queue.policy.queuePriority < $1.queue.policy.queuePriority }
        for c in (idle + lower).prefix(count - quitting) { c.retire() }
    }
}

/// A slot reserved for one queue in one budget.
struct ReservedSlotKey: Hashable {
    let queue: QueueKey
    let budget: ObjectIdentifier
}
