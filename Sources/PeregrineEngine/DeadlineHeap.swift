/// A binary min-heap of values keyed by a deadline (ties in insertion order):
/// a queue's delayed recipients, waiting for their retry time.
public struct DeadlineHeap<Element> {
    struct Node { var deadline: UInt64; var sequence: UInt64; var element: Element }
    var nodes: [Node] = []
    var sequence: UInt64 = 0

    public init() {}

    public var count: Int { nodes.count }
    public var isEmpty: Bool { nodes.isEmpty }
    public var nextDeadline: UInt64? { nodes.first?.deadline }

    public mutating func insert(_ element: Element, at deadline: UInt64) {
        sequence &+= 1
        nodes.append(Node(deadline: deadline, sequence: sequence, element: element))
        var i = nodes.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if less(i, parent) { nodes.swapAt(i, parent); i = parent } else { break }
        }
    }

    /// Removes and returns the earliest element if its deadline is at or before `now`.
    public mutating func popDue(now: UInt64) -> Element? {
        guard let top = nodes.first, top.deadline <= now else { return nil }
        return popFirst()?.element
    }

    public mutating func popFirst() -> (deadline: UInt64, element: Element)? {
        guard !nodes.isEmpty else { return nil }
        let top = nodes[0]
        let last = nodes.removeLast()
        shrinkIfSparse()
        if !nodes.isEmpty {
            nodes[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < nodes.count && less(l, m) { m = l }
                if r < nodes.count && less(r, m) { m = r }
                if m == i { break }
                nodes.swapAt(i, m)
                i = m
            }
        }
        return (top.deadline, top.element)
    }

    /// Halves the array's capacity once it is under a quarter used: a queue's
    /// delayed set that drained (all due at once, or `schedule`) gives its
    /// largest size back instead of keeping it beside the ready list (issue #18).
    private mutating func shrinkIfSparse() {
        guard nodes.capacity > 64 && nodes.count < nodes.capacity / 4 else { return }
        var smaller: [Node] = []
        smaller.reserveCapacity(nodes.capacity / 2)
        smaller.append(contentsOf: nodes)
        nodes = smaller
    }

    /// Empties the heap, returning everything (used by `schedule`: retry now).
    public mutating func removeAll() -> [Element] {
        let all = nodes.sorted { $0.deadline != $1.deadline ? $0.deadline < $1.deadline : $0.sequence < $1.sequence }
        nodes.removeAll()
        return all.map(\.element)
    }

    func less(_ a: Int, _ b: Int) -> Bool {
        nodes[a].deadline != nodes[b].deadline ? nodes[a].deadline < nodes[b].deadline
                                               : nodes[a].sequence < nodes[b].sequence
    }
}
