import Testing
@testable import PeregrineEngine

/// A queue's ready list and delayed heap give back the room a backlog took
/// once it has moved on (issue #18): with the receiver down, a whole queue
/// moves ready -> delayed after each failed connection and back when due,
/// and each structure kept its largest size, so the backlog was held twice.
/// Capacities are deterministic: they are checked exactly, no timing.
@Suite struct QueueCapacityTests {
    @Test func ringBufferShrinksOnceDrainedAndKeepsOrder() {
        var r = RingBuffer<Int>()
        for i in 0..<100_000 { r.append(i) }
        let full = r.capacity
        #expect(full >= 100_000)
        // Pop most, with a prepend in between: order and contents survive each halving.
        var out: [Int] = []
        for _ in 0..<99_990 { if let x = r.popFirst() { out.append(x) } }
        #expect(out == Array(0..<99_990))
        #expect(r.capacity <= 64, "a nearly empty buffer keeps \(r.capacity) slots (it held \(full))")
        r.prepend(-1)
        var rest: [Int] = []
        while let x = r.popFirst() { rest.append(x) }
        #expect(rest == [-1] + Array(99_990..<100_000))
        #expect(r.capacity >= RingBuffer<Int>.shrinkFloor)
        // It grows again from there.
        for i in 0..<1000 { r.append(i) }
        #expect(r.count == 1000 && r.first == 0)
    }

    @Test func removeAllWhereKeepsTheRest() {
        var r = RingBuffer<Int>()
        for i in 0..<10_000 { r.append(i) }
        let odd = r.removeAll { $0 % 2 == 1 }
        #expect(odd.count == 5000 && r.count == 5000)
        var evens: [Int] = []
        while let x = r.popFirst() { evens.append(x) }
        #expect(evens == stride(from: 0, to: 10_000, by: 2).map { $0 })
    }

    @Test func deadlineHeapShrinksOnceDrainedAndKeepsOrder() {
        var h = DeadlineHeap<Int>()
        // Deadlines repeat (ties must come out in insertion order), inserted out of order.
        for i in 0..<50_000 { h.insert(i, at: UInt64((i * 7919) % 1000)) }
        let full = h.nodes.capacity
        var last: (deadline: UInt64, element: Int)?
        var popped = 0
        while h.count > 100, let x = h.popFirst() {
            if let l = last {
                #expect(l.deadline < x.deadline || (l.deadline == x.deadline && l.element < x.element),
                        "out of order: \(l) before \(x)")
            }
            last = x
            popped += 1
        }
        #expect(popped == 49_900)
        #expect(h.nodes.capacity <= 400, "a nearly empty heap keeps \(h.nodes.capacity) nodes (it held \(full))")
        var rest: [Int] = []
        while let x = h.popFirst() { rest.append(x.element) }
        #expect(rest.count == 100)
    }
}
