import Testing
import PeregrineIO
@testable import PeregrineEngine
@testable import PeregrineDaemon

/// The shared connection cap as pure state: slots up to the limit, waiters
/// served by queue-priority then arrival, freed slots handed over (never
/// left free while someone waits), and reloads that raise or lower it.
@Suite struct EngineConnectionBudgetTests {
    /// Records which waiters were handed a slot, in order.
    final class Grants: @unchecked Sendable {
        private let lock = Locked<[String]>([])
        var names: [String] { lock.withLock { $0 } }
        func callback(_ name: String) -> @Sendable () -> Void { { self.lock.withLock { $0.append(name) } } }
    }

    static func waiter(_ domain: String, engine: AnyObject = Grants()) -> ConnectionBudget.WaiterID {
        .init(engine: ObjectIdentifier(engine), queue: QueueKey(domain: domain, vmta: "v"))
    }

    @Test func slotsUpToTheLimitThenWaitersByPriorityThenArrival() {
        let budget = ConnectionBudget(name: "total-max-smtp-out", limit: 3)
        let grants = Grants()
        let engine = Grants()
        #expect(budget.take(2, priority: 50, waiter: Self.waiter("a.test", engine: engine), granted: grants.callback("a")) == 2)
        #expect(budget.take(4, priority: 50, waiter: Self.waiter("b.test", engine: engine), granted: grants.callback("b")) == 1)
        #expect(budget.take(1, priority: 10, waiter: Self.waiter("low.test", engine: engine), granted: grants.callback("low")) == 0)
        #expect(budget.take(1, priority: 90, waiter: Self.waiter("high.test", engine: engine), granted: grants.callback("high")) == 0)
        #expect(budget.take(1, priority: 50, waiter: Self.waiter("c.test", engine: engine), granted: grants.callback("c")) == 0)
        #expect(budget.snapshot == .init(limit: 3, used: 3, waiting: 4))
        // Each freed slot goes to the best waiter and stays counted as used for it.
        budget.give(1)
        #expect(grants.names == ["high"])
        budget.give(2)
        #expect(grants.names == ["high", "b", "c"])
        #expect(budget.snapshot == .init(limit: 3, used: 3, waiting: 1))
        budget.give(1)
        #expect(grants.names == ["high", "b", "c", "low"])
        budget.give(3)
        #expect(budget.snapshot == .init(limit: 3, used: 0, waiting: 0))
    }

    @Test func aLowerPriorityQueueCannotTakeWhileAHigherOneWaits() {
        let budget = ConnectionBudget(name: "virtual-mta v", limit: 1)
        let grants = Grants()
        let engine = Grants()
        #expect(budget.take(1, priority: 50, waiter: Self.waiter("a.test", engine: engine), granted: grants.callback("a")) == 1)
        #expect(budget.take(1, priority: 90, waiter: Self.waiter("high.test", engine: engine), granted: grants.callback("high")) == 0)
        // A reload raises the limit: the new slot goes to the waiter, not to a newcomer.
        budget.setLimit(2)
        #expect(grants.names == ["high"])
        #expect(budget.take(1, priority: 10, waiter: Self.waiter("low.test", engine: engine), granted: grants.callback("low")) == 0)
        #expect(budget.take(1, priority: 95, waiter: Self.waiter("top.test", engine: engine), granted: grants.callback("top")) == 0)
        #expect(budget.take(1, priority: 20, waiter: Self.waiter("mid.test", engine: engine), granted: grants.callback("mid")) == 0)
        budget.withdraw(Self.waiter("top.test", engine: engine))
        budget.give(1)
        #expect(grants.names == ["high", "mid"])
    }

    @Test func aLoweredLimitIsReachedAsConnectionsClose() {
        let budget = ConnectionBudget(name: "total-max-smtp-out", limit: 4)
        let grants = Grants()
        let engine = Grants()
        #expect(budget.take(4, priority: 50, waiter: Self.waiter("a.test", engine: engine), granted: grants.callback("a")) == 4)
        budget.setLimit(2)
        #expect(budget.take(1, priority: 50, waiter: Self.waiter("b.test", engine: engine), granted: grants.callback("b")) == 0)
        budget.give(2)  // 4 → 2 in use: still at the new limit, nothing handed over
        #expect(grants.names.isEmpty)
        budget.give(1)
        #expect(grants.names == ["b"])
        #expect(budget.snapshot == .init(limit: 2, used: 2, waiting: 0))
    }

    @Test func coldVMTAQuotaCountsPerQueuePerDay() {
        let quota = ColdVMTAQuota()
        let gmail = QueueKey(domain: "gmail.com", vmta: "v"), yahoo = QueueKey(domain: "yahoo.com", vmta: "v")
        #expect((0..<5).map { _ in quota.take(queue: gmail, limit: 3, day: 100) } == [true, true, true, false, false])
        #expect(quota.take(queue: yahoo, limit: 3, day: 100))
        #expect(quota.take(queue: gmail, limit: 3, day: 101))
    }

    @Test func theTableKeepsBudgetsAcrossReloads() {
        let table = ConnectionBudgets()
        table.configure(total: 10, perVMTA: ["vmta1": 3])
        let before = table.budgets(forVMTA: "VMTA1")
        #expect(before.map(\.name) == ["total-max-smtp-out", "virtual-mta vmta1"])
        #expect(table.budgets(forVMTA: "vmta2").map(\.name) == ["total-max-smtp-out"])
        table.configure(total: 20, perVMTA: ["vmta1": 5])
        let after = table.budgets(forVMTA: "vmta1")
        #expect(zip(before, after).allSatisfy { $0 === $1 })
        #expect(after.map(\.snapshot.limit) == [20, 5])
        table.configure(total: nil, perVMTA: [:])
        #expect(ConnectionBudgets().budgets(forVMTA: "vmta1").isEmpty)
    }
}
