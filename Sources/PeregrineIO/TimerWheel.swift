/// A hashed timing wheel for the loop-driven backends (epoll, io_uring).
///
/// SMTP sessions re-arm an idle timeout on every command, so most timers are
/// cancelled long before they fire: scheduling and cancelling are O(1) here
/// and allocate nothing once the slab has grown. Resolution is one tick
/// (1 ms); a timer never fires early. Entries further away than one
/// revolution stay in their slot and are skipped until their round comes.
/// A cancelled timer is unlinked from its slot at once (slots are doubly
/// linked), so a slot's occupancy bit means "holds a live timer" and finding
/// the next wake-up is a bitmap scan, however many timers were cancelled.
public struct TimerWheel {
    public static let tickNanoseconds: UInt64 = 1_000_000
    @usableFromInline static let slotCount = 4096  // power of two: ~4 s per revolution

    @usableFromInline
    struct Entry {
        var deadline: UInt64
        var sequence: UInt64
        var generation: UInt32
        var next: Int32          // next entry in the same slot, -1 = end
        var prev: Int32 = -1     // previous entry in the same slot, -1 = slot head
        var slot: Int32 = -1     // the slot it is linked into, -1 = not linked
        var live: Bool
        /// Due and handed out by `advance(to:due:)`, not yet taken or cancelled.
        var firing: Bool = false
        var callback: (() -> Void)?
    }

    @usableFromInline var entries: [Entry] = []
    @usableFromInline var freeList: [Int32] = []
    @usableFromInline var slotHeads: [Int32]
    /// One bit per slot that may hold entries: finding the next timer skips
    /// empty stretches a word at a time instead of visiting every slot.
    @usableFromInline var occupied: [UInt64]
    /// The last tick whose slot has been processed.
    @usableFromInline var processedTick: UInt64
    @usableFromInline var sequence: UInt64 = 0
    public private(set) var liveCount = 0
    /// Reused between turns: the callbacks due in this turn, sorted before firing.
    var due: [(deadline: UInt64, sequence: UInt64, index: Int32)] = []

    public init(now: UInt64) {
        slotHeads = Array(repeating: -1, count: Self.slotCount)
        occupied = Array(repeating: 0, count: Self.slotCount / 64)
        processedTick = now / Self.tickNanoseconds
    }

    /// Schedules `callback` at absolute monotonic time `deadline`.
    public mutating func schedule(at deadline: UInt64, _ callback: @escaping () -> Void) -> TimerHandle {
        let index: Int32
        if let reused = freeList.popLast() {
            index = reused
        } else {
            index = Int32(entries.count)
            entries.append(Entry(deadline: 0, sequence: 0, generation: 0, next: -1, live: false, callback: nil))
        }
        sequence &+= 1
        // A deadline inside an already-processed tick goes into the next tick's slot.
        let tick = max(deadline / Self.tickNanoseconds + (deadline % Self.tickNanoseconds == 0 ? 0 : 1),
                       processedTick + 1)
        let slot = Int(tick & UInt64(Self.slotCount - 1))
        entries[Int(index)].deadline = deadline
        entries[Int(index)].sequence = sequence
        entries[Int(index)].generation &+= 1
        entries[Int(index)].live = true
        entries[Int(index)].callback = callback
        let head = slotHeads[slot]
        entries[Int(index)].next = head
        entries[Int(index)].prev = -1
        entries[Int(index)].slot = Int32(slot)
        if head >= 0 { entries[Int(head)].prev = index }
        slotHeads[slot] = index
        occupied[slot >> 6] |= 1 << UInt64(slot & 63)
        liveCount += 1
        return TimerHandle(id: UInt64(entries[Int(index)].generation) << 32 | UInt64(UInt32(index)))
    }

    /// Cancels a timer; a stale or already-fired handle is ignored. The entry
    /// is unlinked from its slot and reused at once.
    public mutating func cancel(_ handle: TimerHandle) {
        let index = Int(UInt32(truncatingIfNeeded: handle.id))
        let generation = UInt32(truncatingIfNeeded: handle.id >> 32)
        guard index < entries.count, entries[index].generation == generation, entries[index].live else { return }
        entries[index].live = false
        entries[index].callback = nil
        if entries[index].firing {
            // Already unlinked and counted out by `advance(to:due:)`: reclaim now.
            entries[index].firing = false
            freeList.append(Int32(index))
        } else {
            liveCount -= 1
            unlink(Int32(index))
            freeList.append(Int32(index))
        }
    }

    /// Removes a linked entry from its slot (clearing the slot's bit when it empties).
    @usableFromInline
    mutating func unlink(_ index: Int32) {
        let slot = Int(entries[Int(index)].slot)
        guard slot >= 0 else { return }
        let prev = entries[Int(index)].prev, next = entries[Int(index)].next
        if prev >= 0 { entries[Int(prev)].next = next } else { slotHeads[slot] = next }
        if next >= 0 { entries[Int(next)].prev = prev }
        entries[Int(index)].next = -1
        entries[Int(index)].prev = -1
        entries[Int(index)].slot = -1
        if slotHeads[slot] < 0 { occupied[slot >> 6] &= ~(1 << UInt64(slot & 63)) }
    }

    /// Nanoseconds until the loop should wake for timers (nil: no live timers).
    /// May be early (an entry for a later revolution), never late. Every linked
    /// entry is live, so the first occupied slot is the answer.
    public func nanosecondsUntilNextTick(now: UInt64) -> UInt64? {
        guard liveCount > 0 else { return nil }
        let mask = UInt64(Self.slotCount - 1)
        var tick = processedTick + 1
        let limit = processedTick + UInt64(Self.slotCount)
        while tick <= limit {
            let slot = Int(tick & mask)
            let bits = occupied[slot >> 6] >> UInt64(slot & 63)
            if bits == 0 {
                tick += UInt64(64 - (slot & 63))
                continue
            }
            tick += UInt64(bits.trailingZeroBitCount)
            break
        }
        let at = min(tick, limit) * Self.tickNanoseconds
        return at > now ? at - now : 0
    }

    /// Advances to `now` and returns the handles of the due timers, in deadline
    /// order (ties in scheduling order). The caller fires them one by one with
    /// `takeDue(_:)`, which returns nil for a timer cancelled meanwhile (e.g.
    /// by an earlier callback of the same batch): the contract "a cancelled
    /// timer never fires" holds within a batch too.
    public mutating func advance(to now: UInt64, due handles: inout [TimerHandle]) {
        let nowTick = now / Self.tickNanoseconds
        guard nowTick > processedTick else { return }
        let span = min(nowTick - processedTick, UInt64(Self.slotCount))
        var tick = nowTick - span + 1
        while tick <= nowTick {
            collect(slot: Int(tick & UInt64(Self.slotCount - 1)), now: now)
            tick += 1
        }
        processedTick = nowTick
        if due.isEmpty { return }
        due.sort { $0.deadline != $1.deadline ? $0.deadline < $1.deadline : $0.sequence < $1.sequence }
        for d in due {
            entries[Int(d.index)].firing = true
            handles.append(TimerHandle(id: UInt64(entries[Int(d.index)].generation) << 32 | UInt64(UInt32(d.index))))
        }
        due.removeAll(keepingCapacity: true)
    }

    /// Takes the callback of a timer handed out by `advance(to:due:)`; nil when it
    /// was cancelled since (or the handle is stale). The entry is reclaimed.
    public mutating func takeDue(_ handle: TimerHandle) -> (() -> Void)? {
        let index = Int(UInt32(truncatingIfNeeded: handle.id))
        let generation = UInt32(truncatingIfNeeded: handle.id >> 32)
        guard index < entries.count, entries[index].generation == generation,
              entries[index].live, entries[index].firing else { return nil }
        let cb = entries[index].callback
        entries[index].callback = nil
        entries[index].live = false
        entries[index].firing = false
        freeList.append(Int32(index))
        return cb
    }

    @usableFromInline
    mutating func collect(slot: Int, now: UInt64) {
        var i = slotHeads[slot]
        while i >= 0 {
            let next = entries[Int(i)].next
            let deadline = entries[Int(i)].deadline
            if deadline <= now {
                // Due (linked entries are all live): unlink and queue for firing.
                unlink(i)
                due.append((deadline, entries[Int(i)].sequence, i))
                liveCount -= 1
            }
            i = next
        }
    }
}
