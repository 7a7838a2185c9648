import Testing
@testable import PeregrineSpool

/// The live set's compact table (issue #18) against a Dictionary doing the
/// same operations: inserts, overwrites, removals (backward shift through
/// colliding probe runs), index growth, reuse of freed records, ids of
/// several writer runs, and the release of everything once empty.
@Suite struct LiveMessageTableTests {
    static func slot(_ k: UInt64) -> LiveMessageTable.Slot {
        LiveMessageTable.Slot(offset: Int64(k) * 4300 + (1 << 33), segment: UInt32(k % 7) + 1, recordLength: UInt32(k % 5000) + 100,
                              bodyOffset: UInt32(k % 300), count: UInt16(k % 33), word: k &* 0x9E37_79B9_7F4A_7C15)
    }

    static func check(_ table: LiveMessageTable, _ reference: [MessageID: LiveMessageTable.Slot]) {
        #expect(table.count == reference.count)
        var seen: [MessageID: LiveMessageTable.Slot] = [:]
        table.forEach { id, s in seen[id] = s }
        #expect(seen == reference)
    }

    @Test func matchesADictionaryUnderRandomOperations() {
        var rng = SystemRandomNumberGenerator()
        let table = LiveMessageTable()
        var reference: [MessageID: LiveMessageTable.Slot] = [:]
        // Three writer runs (high halves); counters as the writer makes them, dense and colliding in low bits.
        let his: [UInt64] = [1_733_400_000_000_000_000, 1_733_400_123_000_000_000, 7]
        var next: [UInt64] = [0, 0, 0]
        var live: [MessageID] = []
        for step in 0..<60_000 {
            let op = Int.random(in: 0..<10, using: &rng)
            if op < 6 || live.isEmpty {
                let w = Int.random(in: 0..<his.count, using: &rng)
                let id = MessageID(hi: his[w], lo: UInt64(w) << 56 | next[w])
                next[w] += 1
                let s = Self.slot(UInt64(step))
                table[id] = s
                reference[id] = s
                live.append(id)
            } else if op < 8 {
                let k = Int.random(in: 0..<live.count, using: &rng)
                live.swapAt(k, live.count - 1)
                let id = live.removeLast()
                table[id] = nil
                reference[id] = nil
                #expect(table[id] == nil)
            } else {
                let id = live[Int.random(in: 0..<live.count, using: &rng)]
                let s = Self.slot(UInt64(step) &* 31)
                table[id] = s
                reference[id] = s
            }
            if step % 10_000 == 0 { Self.check(table, reference) }
        }
        Self.check(table, reference)
        for id in reference.keys { #expect(table[id] == reference[id]) }
        #expect(table[MessageID(hi: 99, lo: 0)] == nil && table[MessageID(hi: his[0], lo: 1 << 60)] == nil)
        // Removing an unknown id changes nothing.
        table[MessageID(hi: 99, lo: 5)] = nil
        #expect(table.count == reference.count)
        for id in live { table[id] = nil }
        #expect(table.count == 0 && table.allocatedBytes <= 64 * 4)
        // Usable again after everything went back.
        table[live.first ?? MessageID(hi: 1, lo: 1)] = Self.slot(3)
        #expect(table.count == 1)
    }

    /// A backlog's worth (300,000 here: a million took 10 s in the debug
    /// build): 40 bytes a record and a 4-byte index at most 3/4 full, instead
    /// of a Dictionary's 48-byte buckets at most 3/4 full.
    @Test func manyLiveMessagesTakeUnder50BytesEach() {
        let n = 300_000
        let table = LiveMessageTable()
        for i in 0..<n { table[MessageID(hi: 5, lo: UInt64(i))] = Self.slot(UInt64(i)) }
        #expect(table.count == n)
        #expect(LiveMessageTable.recordStride == 40)
        #expect(table.allocatedBytes / n <= 50, "\(table.allocatedBytes) bytes for \(n)")
        for i in stride(from: 0, to: n, by: 3) { table[MessageID(hi: 5, lo: UInt64(i))] = nil }
        var wrong = 0
        for i in 0..<n where (table[MessageID(hi: 5, lo: UInt64(i))] == nil) != (i % 3 == 0) { wrong += 1 }
        #expect(wrong == 0 && table.count == n - n / 3)
    }

    /// Messages on disk only (max-queued-in-memory): paged in oldest first; a
    /// new location (compaction) keeps the mark; a message that left the
    /// table, or whose record was reused, is skipped; the count follows.
    @Test func pagedOutMessagesComeBackOldestFirst() {
        let live = SpoolLiveSet()
        func id(_ i: Int) -> MessageID { MessageID(hi: 9, lo: UInt64(i)) }
        func loc(_ i: Int) -> MessageLocation { MessageLocation(segment: 1, offset: Int64(i) * 100, recordLength: 100, bodyOffset: 40) }
        for i in 0..<10 { live.place(id(i), at: loc(i), states: RecipientStates(count: 1)) }
        #expect(!live.pageOut(MessageID(hi: 9, lo: 99)), "not live")
        for i in [3, 1, 4, 5, 9] { #expect(live.pageOut(id(i))) }
        #expect(live.pageOut(id(3)) && live.onDiskMessageCount == 5, "twice counts once")
        #expect(live.isOnDisk(id(4)) && !live.isOnDisk(id(0)))
        // Compaction moves 4: still on disk only, at its new place.
        live.place(id(4), at: MessageLocation(segment: 2, offset: 0, recordLength: 100, bodyOffset: 40), states: RecipientStates(count: 1))
        #expect(live.isOnDisk(id(4)) && live.entry(id(4))?.location.segment == 2)
        // 1 completes (outcome) while on disk; a new message takes its record and is held in memory.
        #expect(live.applyOutcome(id(1), recipient: 0, state: .delivered, writtenIn: 1) == 0)
        live.place(id(20), at: loc(20), states: RecipientStates(count: 1))
        #expect(live.onDiskMessageCount == 4)
        var order: [MessageID] = []
        while let m = live.pageIn() { order.append(m) }
        #expect(order == [id(3), id(4), id(5), id(9)])
        #expect(live.onDiskMessageCount == 0 && !live.isOnDisk(id(4)) && live.entry(id(4)) != nil)
        // Everything completes: the table lets its memory go, and paging starts afresh.
        for i in [0, 2, 3, 4, 5, 6, 7, 8, 9, 20] { live.applyOutcome(id(i), recipient: 0, state: .delivered, writtenIn: 1) }
        #expect(live.liveMessageCount == 0 && live.pageIn() == nil)
        live.place(id(30), at: loc(30), states: RecipientStates(count: 1))
        #expect(live.pageOut(id(30)) && live.pageIn() == id(30) && live.pageIn() == nil)
    }
}
