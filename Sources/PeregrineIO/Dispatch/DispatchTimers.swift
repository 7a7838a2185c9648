import Dispatch

/// The Dispatch loop's timers: a binary min-heap of (deadline, sequence)
/// plus a table of live callbacks, driven by one DispatchSourceTimer armed
/// for the earliest deadline.
///
/// Why not one DispatchSourceTimer per timer: libdispatch gives no ordering
/// between two timer sources due together (the contract wants deadline
/// order, ties in scheduling order), and a cancelled source's handler may
/// already be enqueued on the loop queue. Here a timer fires only if its id
/// is still in `callbacks` at the moment its turn comes, so cancelling (even
/// from an earlier callback of the same batch) always wins. Cancelled
/// entries stay in the heap until they surface or until the heap is
/// compacted (when more than half of it is dead), so cancel is O(1).
struct DispatchTimers {
    struct Entry {
        var deadline: UInt64
        var id: UInt64   // also the scheduling sequence
    }

    var heap: [Entry] = []
    var callbacks: [UInt64: () -> Void] = [:]
    var nextID: UInt64 = 0
    /// The deadline the DispatchSourceTimer is armed for (nil: disarmed).
    var armedDeadline: UInt64?

    @inline(__always)
    static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.id < b.id
    }

    mutating func schedule(at deadline: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        nextID &+= 1
        let id = nextID
        callbacks[id] = fire
        push(Entry(deadline: deadline, id: id))
        return TimerHandle(id: id)
    }

    mutating func cancel(_ handle: TimerHandle) {
        guard callbacks.removeValue(forKey: handle.id) != nil else { return }
        if heap.count > 64 && heap.count > 2 * callbacks.count { compact() }
    }

    /// Drops dead entries from the top; returns the earliest live deadline.
    mutating func earliestDeadline() -> UInt64? {
        while let top = heap.first {
            if callbacks[top.id] != nil { return top.deadline }
            _ = pop()
        }
        return nil
    }

    /// Removes and returns the next entry due at `now` (live or not) that was
    /// scheduled no later than `scheduledBy` (an id: ids are the scheduling sequence).
    /// Entries scheduled after that stay in the heap for a later batch, even when
    /// due. Stopping at the first such entry skips no older due one: a timer
    /// scheduled during the batch has a deadline of at least `now`, so it sorts
    /// after every older entry due at `now` (ties go by id).
    mutating func popDue(now: UInt64, scheduledBy limit: UInt64 = .max) -> Entry? {
        guard let top = heap.first, top.deadline <= now, top.id <= limit else { return nil }
        return pop()
    }

    private mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !Self.less(heap[i], heap[parent]) { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func pop() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown(0)
        }
        return top
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        let n = heap.count
        while true {
            let l = 2 * i + 1
            if l >= n { return }
            var m = l
            if l + 1 < n && Self.less(heap[l + 1], heap[l]) { m = l + 1 }
            if !Self.less(heap[m], heap[i]) { return }
            heap.swapAt(i, m)
            i = m
        }
    }

    private mutating func compact() {
        heap.removeAll { callbacks[$0.id] == nil }
        var i = heap.count / 2
        while i > 0 { i -= 1; siftDown(i) }
    }
}

extension DispatchLoop {
    public func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        // Counted from the turn's `now` (the contract's time base): timers
        // scheduled in one turn keep their relative order exactly.
        let (deadline, overflow) = now.addingReportingOverflow(delay)
        let handle = timers.schedule(at: overflow ? UInt64.max : deadline, fire)
        rearmTimerSource()
        return handle
    }

    public func cancelTimer(_ timer: TimerHandle) {
        timers.cancel(timer)
        // No re-arm: a spurious wake-up finds nothing due and re-arms then.
    }

    /// The timer source's handler (inside a turn): fires every timer due at
    /// `now` in deadline order, then re-arms for the next one.
    ///
    /// Only timers scheduled before this batch started fire in it, as on the
    /// epoll and io_uring loops (which snapshot the due list). A timer armed by
    /// a callback of the batch, even with a zero delay, waits for the next timer
    /// turn, so sockets, hand-offs and file completions queued meanwhile run
    /// first. Without that cut-off a callback that re-arms itself at `now` (the
    /// delivery engine's queue timer did) kept this block running forever: the
    /// serial queue never ran anything else and the loop looked dead.
    func fireDueTimers() {
        timers.armedDeadline = nil
        let scheduledBy = timers.nextID
        while let e = timers.popDue(now: now, scheduledBy: scheduledBy) {
            // Looked up at firing time: a timer cancelled by an earlier callback never fires.
            guard let fire = timers.callbacks.removeValue(forKey: e.id) else { continue }
            fire()
        }
        rearmTimerSource()
    }

    /// Arms the timer source for the earliest live deadline, if it is not
    /// already armed for that or an earlier one.
    func rearmTimerSource() {
        guard let deadline = timers.earliestDeadline() else { return }
        if let armed = timers.armedDeadline, armed <= deadline { return }
        timers.armedDeadline = deadline
        let current = monotonicNanoseconds()
        let delay = deadline > current ? deadline - current : 0
        // DispatchTime's clock is not guaranteed to be ours: schedule relatively.
        // If it fires a hair early, fireDueTimers finds nothing due and re-arms.
        let when: DispatchTime = delay >= UInt64(Int.max) ? .distantFuture : .now() + .nanoseconds(Int(delay))
        timerSource.schedule(deadline: when, repeating: .never, leeway: .nanoseconds(0))
    }
}
