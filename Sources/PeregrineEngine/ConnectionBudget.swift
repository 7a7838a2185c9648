import PeregrineIO

/// A cap on outbound connections that several queues, on every loop, draw
/// from: `total-max-smtp-out` (all connections) or a `<virtual-mta>`'s own
/// `max-smtp-out` (all of that VMTA's queues). A queue's own `max-smtp-out`
/// still applies inside it.
///
/// Slots are scarce only here, so this is where `queue-priority` decides
/// (PowerMTA: 0 lowest, 100 highest, 50 by default). A queue refused a slot
/// waits; a freed slot is handed to the highest-priority waiter (first come
/// among equals) and stays reserved for it until its loop takes it or gives
/// it back, and no queue of lower priority takes a slot while a higher one
/// waits. Queues that never wait pay one uncontended lock per connection opened.
public final class ConnectionBudget: Sendable {
    /// Who waits: one queue of one engine. The engine's identity keeps two
    /// loops' queues with the same name apart.
    package struct WaiterID: Hashable, Sendable {
        package let engine: ObjectIdentifier
        package let queue: QueueKey
        package init(engine: ObjectIdentifier, queue: QueueKey) { self.engine = engine; self.queue = queue }
    }

    private struct Waiter {
        let id: WaiterID
        var priority: Int
        let order: UInt64
        /// Hands one reserved slot to the waiter's loop. Called without the lock held.
        let granted: @Sendable () -> Void
    }

    private struct State {
        var limit: Int
        var used = 0
        var waiters: [Waiter] = []
        var nextOrder: UInt64 = 0

        /// The waiter a freed slot goes to: highest priority, then longest waiting.
        mutating func popBest() -> Waiter? {
            guard var best = waiters.indices.first else { return nil }
            for i in waiters.indices.dropFirst() {
                let w = waiters[i], b = waiters[best]
                if w.priority > b.priority || (w.priority == b.priority && w.order < b.order) { best = i }
            }
            return waiters.remove(at: best)
        }
    }

    /// What it caps, for `ctl` and the log ("total-max-smtp-out", "virtual-mta vmta1").
    package let name: String
    private let state: Locked<State>

    package init(name: String, limit: Int) {
        self.name = name
        self.state = Locked(State(limit: max(0, limit)))
    }

    /// Takes up to `wanted` slots for a queue of priority `priority`; returns
    /// how many it got. When it got fewer, the queue waits: `granted` is
    /// called (from whichever thread frees the slot) each time a slot is
    /// reserved for it, and the queue must then `take` it through
    /// `reserved`-aware code or `give` it back.
    package func take(_ wanted: Int, priority: Int, waiter id: WaiterID,
                      granted: @escaping @Sendable () -> Void) -> Int {
        guard wanted > 0 else { return 0 }
        return state.withLock { s in
            let outranked = s.waiters.contains { $0.priority > priority && $0.id != id }
            let got = outranked ? 0 : min(wanted, max(0, s.limit - s.used))
            s.used += got
            if let i = s.waiters.firstIndex(where: { $0.id == id }) {
                if got == wanted { s.waiters.remove(at: i) } else { s.waiters[i].priority = priority }
            } else if got < wanted {
                s.waiters.append(Waiter(id: id, priority: priority, order: s.nextOrder, granted: granted))
                s.nextOrder &+= 1
            }
            return got
        }
    }

    /// Returns `count` slots (connections closed, or reserved slots a queue
    /// no longer needs). Each goes to the best waiter if there is one, and
    /// stays counted as used for it.
    package func give(_ count: Int) {
        guard count > 0 else { return }
        let handed: [@Sendable () -> Void] = state.withLock { s in
            var out: [@Sendable () -> Void] = []
            for _ in 0..<count {
                if s.used <= s.limit, let w = s.popBest() {
                    out.append(w.granted)
                } else {
                    s.used -= 1
                }
            }
            return out
        }
        for g in handed { g() }
    }

    /// Stops waiting (the queue has nothing left to send).
    package func withdraw(_ id: WaiterID) {
        state.withLock { s in s.waiters.removeAll { $0.id == id } }
    }

    /// A new limit from a reload. Slots above a lowered limit are not taken
    /// back: connections close as they finish and are not replaced. Slots a
    /// raised limit frees go to waiters at once.
    package func setLimit(_ limit: Int) {
        let handed: [@Sendable () -> Void] = state.withLock { s in
            s.limit = max(0, limit)
            var out: [@Sendable () -> Void] = []
            while s.used < s.limit, let w = s.popBest() {
                s.used += 1
                out.append(w.granted)
            }
            return out
        }
        for g in handed { g() }
    }

    package struct Snapshot: Sendable, Equatable {
        package var limit: Int
        package var used: Int
        package var waiting: Int
    }

    package var snapshot: Snapshot {
        state.withLock { s in Snapshot(limit: s.limit, used: s.used, waiting: s.waiters.count) }
    }
}

/// The shared budgets of one daemon: the global one and one per VMTA that
/// sets `max-smtp-out`. Created once and kept across reloads (its budgets'
/// counts are live connections); `configure` applies a config's limits.
public final class ConnectionBudgets: Sendable {
    private struct Table {
        var total: ConnectionBudget?
        var byVMTA: [String: ConnectionBudget] = [:]
        /// Budgets dropped by a reload: kept so that connections opened under
        /// them give their slots back to the same object.
        var retired: [String: ConnectionBudget] = [:]
    }
    private let table = Locked(Table())

    package init() {}

    /// Applies `total` (nil: no global cap) and per-VMTA limits (lowercased names).
    package func configure(total: Int?, perVMTA: [String: Int]) {
        var raised: [(ConnectionBudget, Int)] = []
        table.withLock { t in
            if let total {
                if let b = t.total { raised.append((b, total)) } else { t.total = ConnectionBudget(name: "total-max-smtp-out", limit: total) }
            } else if let b = t.total {
                // Unlimited now: wake every waiter.
                raised.append((b, Int.max / 2))
            }
            for (name, limit) in perVMTA {
                if let b = t.byVMTA[name] { raised.append((b, limit)) }
                else if let b = t.retired.removeValue(forKey: name) { t.byVMTA[name] = b; raised.append((b, limit)) }
                else { t.byVMTA[name] = ConnectionBudget(name: "virtual-mta \(name)", limit: limit) }
            }
            for (name, b) in t.byVMTA where perVMTA[name] == nil {
                t.byVMTA[name] = nil
                t.retired[name] = b
                raised.append((b, Int.max / 2))
            }
        }
        for (b, limit) in raised { b.setLimit(limit) }
    }

    /// The budgets a connection of `vmta` draws from, outermost first.
    /// Empty when nothing caps it. Takes the table lock: callers cache the
    /// answer per VMTA until the next reload (ConfigPolicySource does).
    package func budgets(forVMTA vmta: String) -> [ConnectionBudget] {
        table.withLock { t in
            var out: [ConnectionBudget] = []
            if let b = t.total { out.append(b) }
            if let b = t.byVMTA[vmta.lowercased()] ?? t.retired[vmta.lowercased()] { out.append(b) }
            return out
        }
    }

    /// Every live budget, for `ctl` and `/metrics`.
    package var all: [ConnectionBudget] {
        table.withLock { t in (t.total.map { [$0] } ?? []) + t.byVMTA.keys.sorted().compactMap { t.byVMTA[$0] } }
    }
}
