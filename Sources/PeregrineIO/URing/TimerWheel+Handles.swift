extension TimerWheel {
    /// Like `advance(to:into:)`, but hands back each due timer's handle with
    /// its callback, so a loop can honour `cancelTimer` on a timer that is due
    /// in the same turn as (and fires after) the callback cancelling it.
    mutating func advanceWithHandles(to now: UInt64, into fired: inout [(TimerHandle, () -> Void)]) {
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
            let i = Int(d.index)
            if let cb = entries[i].callback {
                fired.append((TimerHandle(id: UInt64(entries[i].generation) << 32 | UInt64(UInt32(d.index))), cb))
            }
            entries[i].callback = nil
            entries[i].live = false
            freeList.append(d.index)
        }
        due.removeAll(keepingCapacity: true)
    }
}
