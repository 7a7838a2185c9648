/// The spool live set's messages, keyed by id, sized to the data (issue #18).
///
/// A Swift Dictionary kept 48 bytes per bucket at a load factor of at most
/// 3/4 and power-of-two capacity: 100 MB for a million live messages, and
/// 150 MB while it doubled. Here a message is one 40-byte record in
/// fixed-size chunks (added one at a time, so growth copies nothing), found
/// through an open-addressed index of 4-byte record numbers (linear probing,
/// deletion by backward shift, so no tombstones). The id's high half (the
/// writer's start time: one value per writer run) is interned as 16 bits.
/// Only the index is rehashed when it grows: 12 MB transient at a million.
final class LiveMessageTable {
    /// What the live set keeps per message, without the id.
    struct Slot: Equatable {
        var offset: Int64
        var segment: UInt32
        var recordLength: UInt32
        var bodyOffset: UInt32
        /// Recipient count when the states are packed in `word` (up to 32);
        /// `spilled` when the live set keeps them in its `manyStates`.
        var count: UInt16
        var word: UInt64

        static let spilled = UInt16(0x7FFF)

        var location: MessageLocation {
            MessageLocation(segment: segment, offset: offset, recordLength: recordLength, bodyOffset: bodyOffset)
        }
    }

    /// 40 bytes: the id's low half, the slot, and the interned high half
    /// (`free` marks a record on the free list, whose `lo` is the next free one).
    private struct Record {
        var lo: UInt64
        var offset: Int64
        var word: UInt64
        var segment: UInt32
        var recordLength: UInt32
        var bodyOffset: UInt32
        /// `Slot.count`, and `onDiskBit` while the message is paged out.
        var count: UInt16
        var hiIndex: UInt16
    }

    /// Set in a record's `count` while its message is on disk only
    /// (`max-queued-in-memory`): the scheduler holds no copy of it.
    private static let onDiskBit = UInt16(0x8000)

    private static let free = UInt16.max
    private static let chunkShift = 14
    private static let chunkSize = 1 << chunkShift
    private static let noRecord = UInt32.max

    private var chunks: [UnsafeMutablePointer<Record>] = []
    /// Records handed out so far (live or free): the high-water mark.
    private var used = 0
    private var freeHead = LiveMessageTable.noRecord
    /// Record number + 1 per bucket, 0 = empty; capacity a power of two.
    private var index: UnsafeMutablePointer<UInt32>
    private var mask: Int
    private(set) var count = 0
    /// Distinct high halves of ids (writer start times) and their numbers.
    private var his: [UInt64] = []
    private var hiNumbers: [UInt64: UInt16] = [:]
    private var lastHi: (hi: UInt64, number: UInt16)?
    /// Ids whose high half did not fit the 16-bit table (65,535 writer runs
    /// with messages still live): kept the plain way rather than refused.
    private var overflow: [MessageID: Slot] = [:]

    init() {
        mask = 63
        index = .allocate(capacity: mask + 1)
        index.initialize(repeating: 0, count: mask + 1)
    }

    deinit {
        index.deallocate()
        for c in chunks { c.deallocate() }
    }

    /// Bytes of one message's record (the index adds 4 to 8 per message).
    static var recordStride: Int { MemoryLayout<Record>.stride }

    var allocatedBytes: Int {
        chunks.count * Self.chunkSize * MemoryLayout<Record>.stride + (mask + 1) * MemoryLayout<UInt32>.stride
    }

    subscript(_ id: MessageID) -> Slot? {
        get {
            guard let n = hiNumber(id.hi, adding: false) else { return overflow[id] }
            guard let b = bucket(n, id.lo) else { return nil }
            return Self.slot(record(index[b] - 1).pointee)
        }
        set {
            guard let n = hiNumber(id.hi, adding: newValue != nil) else {
                if overflow[id] != nil || newValue != nil { overflow[id] = newValue }
                return
            }
            if let s = newValue { insert(n, id.lo, s) } else { remove(n, id.lo) }
        }
    }

    /// Every live message, in no particular order.
    func forEach(_ body: (MessageID, Slot) -> Void) {
        for i in 0..<used {
            let r = record(UInt32(i)).pointee
            guard r.hiIndex != Self.free else { continue }
            body(MessageID(hi: his[Int(r.hiIndex)], lo: r.lo), Self.slot(r))
        }
        for (id, s) in overflow { body(id, s) }
    }

    // MARK: Messages kept on disk only

    /// Record numbers of messages paged out, oldest first (from `head`); an
    /// entry whose record is no longer paged out is skipped when popped.
    private var onDisk: [UInt32] = []
    private var onDiskHead = 0
    private(set) var onDiskCount = 0

    /// Marks a live message as on disk only; false if it is not live (or
    /// among the rare ids kept outside the table).
    func pageOut(_ id: MessageID) -> Bool {
        guard let n = hiNumber(id.hi, adding: false), let b = bucket(n, id.lo) else { return false }
        let r = record(index[b] - 1)
        guard r.pointee.count & Self.onDiskBit == 0 else { return true }
        r.pointee.count |= Self.onDiskBit
        onDisk.append(index[b] - 1)
        onDiskCount += 1
        return true
    }

    /// The oldest message on disk only, now marked as held in memory again.
    func pageIn() -> MessageID? {
        while onDiskHead < onDisk.count {
            let i = onDisk[onDiskHead]
            onDiskHead += 1
            let r = record(i)
            guard r.pointee.hiIndex != Self.free, r.pointee.count & Self.onDiskBit != 0 else { continue }
            r.pointee.count &= ~Self.onDiskBit
            onDiskCount -= 1
            trimOnDisk()
            return MessageID(hi: his[Int(r.pointee.hiIndex)], lo: r.pointee.lo)
        }
        trimOnDisk()
        return nil
    }

    /// Whether a live message is on disk only.
    func isOnDisk(_ id: MessageID) -> Bool {
        guard let n = hiNumber(id.hi, adding: false), let b = bucket(n, id.lo) else { return false }
        return record(index[b] - 1).pointee.count & Self.onDiskBit != 0
    }

    private func trimOnDisk() {
        if onDiskHead == onDisk.count {
            onDisk.removeAll(keepingCapacity: onDisk.count < 4096)
            onDiskHead = 0
        } else if onDiskHead > 4096 && onDiskHead * 2 > onDisk.count {
            onDisk.removeFirst(onDiskHead)
            onDiskHead = 0
        }
    }

    private static func slot(_ r: Record) -> Slot {
        Slot(offset: r.offset, segment: r.segment, recordLength: r.recordLength, bodyOffset: r.bodyOffset,
             count: r.count & ~onDiskBit, word: r.word)
    }

    // MARK: Internals

    @inline(__always) private func record(_ i: UInt32) -> UnsafeMutablePointer<Record> {
        chunks[Int(i) >> Self.chunkShift] + (Int(i) & (Self.chunkSize - 1))
    }

    @inline(__always) private static func hash(_ hiNumber: UInt16, _ lo: UInt64) -> Int {
        // A multiply-xorshift mix: ids differ mostly in a counter's low bits.
        var x = lo ^ (UInt64(hiNumber) << 48)
        x = (x ^ (x >> 32)) &* 0xD6E8_FEB8_6659_FD93
        x = (x ^ (x >> 32)) &* 0xD6E8_FEB8_6659_FD93
        return Int(truncatingIfNeeded: x ^ (x >> 32))
    }

    /// The 16-bit number of an id's high half; nil when unknown (and not
    /// `adding`) or when the table is full.
    private func hiNumber(_ hi: UInt64, adding: Bool) -> UInt16? {
        if let last = lastHi, last.hi == hi { return last.number }
        if let n = hiNumbers[hi] {
            lastHi = (hi, n)
            return n
        }
        guard adding, his.count < Int(Self.free) else { return nil }
        let n = UInt16(his.count)
        his.append(hi)
        hiNumbers[hi] = n
        lastHi = (hi, n)
        return n
    }

    /// The bucket holding the record of (`hiNumber`, `lo`), if any.
    private func bucket(_ hiNumber: UInt16, _ lo: UInt64) -> Int? {
        var b = Self.hash(hiNumber, lo) & mask
        while true {
            let v = index[b]
            if v == 0 { return nil }
            let r = record(v - 1)
            if r.pointee.lo == lo && r.pointee.hiIndex == hiNumber { return b }
            b = (b + 1) & mask
        }
    }

    private func insert(_ hiNumber: UInt16, _ lo: UInt64, _ s: Slot) {
        let value = Record(lo: lo, offset: s.offset, word: s.word, segment: s.segment, recordLength: s.recordLength,
                           bodyOffset: s.bodyOffset, count: s.count, hiIndex: hiNumber)
        if let b = bucket(hiNumber, lo) {
            // A compacted copy or new states: a paged-out message stays paged out.
            let r = record(index[b] - 1)
            let kept = r.pointee.count & Self.onDiskBit
            r.pointee = value
            r.pointee.count |= kept
            return
        }
        // Load factor at most 3/4 of a 4-byte index: the index is the only part that rehashes.
        if (count + 1) * 4 > (mask + 1) * 3 { growIndex() }
        let i = takeRecord()
        record(i).pointee = value
        var b = Self.hash(hiNumber, lo) & mask
        while index[b] != 0 { b = (b + 1) & mask }
        index[b] = i + 1
        count += 1
    }

    private func takeRecord() -> UInt32 {
        if freeHead != Self.noRecord {
            let i = freeHead
            freeHead = UInt32(truncatingIfNeeded: record(i).pointee.lo)
            return i
        }
        if used == chunks.count * Self.chunkSize {
            chunks.append(.allocate(capacity: Self.chunkSize))
        }
        used += 1
        return UInt32(used - 1)
    }

    private func remove(_ hiNumber: UInt16, _ lo: UInt64) {
        guard var hole = bucket(hiNumber, lo) else { return }
        let i = index[hole] - 1
        if record(i).pointee.count & Self.onDiskBit != 0 { onDiskCount -= 1 }
        record(i).pointee.hiIndex = Self.free
        record(i).pointee.lo = UInt64(freeHead)
        freeHead = i
        count -= 1
        // Backward shift: pull later entries of the probe run into the hole
        // when their home bucket allows it, so lookups never see a gap.
        var b = (hole + 1) & mask
        while index[b] != 0 {
            let r = record(index[b] - 1).pointee
            let home = Self.hash(r.hiIndex, r.lo) & mask
            // Movable when `home` is not cyclically in (hole, b].
            if (b - home) & mask >= (b - hole) & mask {
                index[hole] = index[b]
                hole = b
            }
            b = (b + 1) & mask
        }
        index[hole] = 0
        if count == 0 { releaseAll() }
    }

    private func growIndex() {
        let newMask = (mask + 1) * 2 - 1
        let newIndex = UnsafeMutablePointer<UInt32>.allocate(capacity: newMask + 1)
        newIndex.initialize(repeating: 0, count: newMask + 1)
        for b in 0...mask where index[b] != 0 {
            let r = record(index[b] - 1).pointee
            var nb = Self.hash(r.hiIndex, r.lo) & newMask
            while newIndex[nb] != 0 { nb = (nb + 1) & newMask }
            newIndex[nb] = index[b]
        }
        index.deallocate()
        index = newIndex
        mask = newMask
    }

    /// Empty again (a drained backlog): the chunks and a large index go back.
    private func releaseAll() {
        for c in chunks { c.deallocate() }
        chunks.removeAll()
        used = 0
        freeHead = Self.noRecord
        onDisk.removeAll()
        onDiskHead = 0
        onDiskCount = 0
        if mask > 63 {
            index.deallocate()
            mask = 63
            index = .allocate(capacity: mask + 1)
        }
        index.initialize(repeating: 0, count: mask + 1)
    }
}
