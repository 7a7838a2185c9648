/// A growable FIFO over one contiguous array: O(1) push and pop without the
/// per-pop shifting of `Array.removeFirst`. (No Swift package dependencies,
/// so no swift-collections Deque.)
public struct RingBuffer<Element> {
    private var storage: [Element?]
    private var head = 0
    public private(set) var count = 0

    public init(capacity: Int = 16) {
        storage = Array(repeating: nil, count: max(1, capacity))
    }

    public var isEmpty: Bool { count == 0 }

    public mutating func append(_ element: Element) {
        if count == storage.count { grow() }
        storage[(head + count) % storage.count] = element
        count += 1
    }

    /// Puts an element back at the front (an item taken but not sent).
    public mutating func prepend(_ element: Element) {
        if count == storage.count { grow() }
        head = (head - 1 + storage.count) % storage.count
        storage[head] = element
        count += 1
    }

    public mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let e = storage[head]
        storage[head] = nil
        head = (head + 1) % storage.count
        count -= 1
        if count < storage.count / 4 && storage.count > Self.shrinkFloor { resize(to: storage.count / 2) }
        return e
    }

    /// Capacity kept however empty the buffer gets. Above it a buffer a quarter
    /// full halves: a queue's ready list that held a backlog for a moment
    /// (every item moving to the delayed heap after a failed connection)
    /// does not keep its largest size beside the heap (issue #18).
    static var shrinkFloor: Int { 64 }

    /// Slots allocated (for the tests).
    var capacity: Int { storage.count }

    public var first: Element? { count > 0 ? storage[head] : nil }

    /// Visits every element front to back, in place, removing none.
    public mutating func updateEach(_ body: (inout Element) throws -> Void) rethrows {
        var slot = head
        for _ in 0..<count {
            if storage[slot] != nil { try body(&storage[slot]!) }
            slot += 1
            if slot == storage.count { slot = 0 }
        }
    }

    /// Removes every element matching `predicate`, keeping order; returns them.
    public mutating func removeAll(where predicate: (Element) -> Bool) -> [Element] {
        var kept: [Element] = [], removed: [Element] = []
        while let e = popFirst() {
            if predicate(e) { removed.append(e) } else { kept.append(e) }
        }
        for e in kept { append(e) }
        return removed
    }

    private mutating func grow() { resize(to: storage.count * 2) }

    private mutating func resize(to slots: Int) {
        var resized = [Element?](repeating: nil, count: slots)
        for i in 0..<count { resized[i] = storage[(head + i) % storage.count] }
        storage = resized
        head = 0
    }
}
