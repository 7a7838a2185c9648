/// What is live in one spool stream: messages with non-final recipients and
/// where they are, and per segment how much of it is still needed.
///
/// A segment may be deleted when no live message is in it and every older
/// segment whose messages its outcome records finalised is gone too (else a
/// restart would resurrect those messages: a duplicate, not a loss, but
/// avoidable). Dependencies only point to older segments, so a sweep in
/// segment order settles them.
public final class SpoolLiveSet {
    public struct Entry: Sendable {
        public var location: MessageLocation
        public var states: RecipientStates
    }

    public struct SegmentStats: Sendable {
        /// Bytes of records written to the segment.
        public var totalBytes: Int64 = 0
        /// Bytes of message records still live in it.
        public var liveBytes: Int64 = 0
        public var liveMessages: Int = 0
        /// Older segments holding messages that outcome records in this one refer to.
        public var dependsOn: Set<UInt32> = []
        public var liveRatio: Double { totalBytes > 0 ? Double(liveBytes) / Double(totalBytes) : 1 }
    }

    /// Live messages in a `LiveMessageTable`: 40 bytes per message plus a
    /// 4-byte index slot, no growth transient (a backlog keeps a million;
    /// issue #18). States of more than 32 recipients spill into `manyStates`.
    private var slots = LiveMessageTable()
    private var manyStates: [MessageID: RecipientStates] = [:]
    public private(set) var segments: [UInt32: SegmentStats] = [:]

    public init() {}

    public var liveMessageCount: Int { slots.count }

    /// Live messages the scheduler does not hold (`max-queued-in-memory`):
    /// their envelopes are read back from the spool when room frees up.
    public var onDiskMessageCount: Int { slots.onDiskCount }

    /// Marks a live message as kept on disk only; false if it is not live
    /// (or one of the rare ids the table keeps outside it: it stays in memory).
    @discardableResult
    public func pageOut(_ id: MessageID) -> Bool { slots.pageOut(id) }

    /// The oldest message kept on disk only, now counted as in memory again.
    public func pageIn() -> MessageID? { slots.pageIn() }

    public func isOnDisk(_ id: MessageID) -> Bool { slots.isOnDisk(id) }

    public func entry(_ id: MessageID) -> Entry? {
        guard let s = slots[id] else { return nil }
        return Entry(location: s.location, states: states(id, s))
    }

    private func states(_ id: MessageID, _ s: LiveMessageTable.Slot) -> RecipientStates {
        if s.count != LiveMessageTable.Slot.spilled, let w = RecipientStates(count: Int(s.count), packed: s.word) { return w }
        return manyStates[id] ?? RecipientStates(count: 0)
    }

    private func store(_ id: MessageID, _ e: Entry) {
        let word = e.states.packedWord
        if word == nil { manyStates[id] = e.states } else if !manyStates.isEmpty { manyStates[id] = nil }
        slots[id] = LiveMessageTable.Slot(offset: e.location.offset, segment: e.location.segment,
                                          recordLength: e.location.recordLength, bodyOffset: e.location.bodyOffset,
                                          count: word == nil ? LiveMessageTable.Slot.spilled : UInt16(e.states.count),
                                          word: word ?? 0)
    }

    private func remove(_ id: MessageID) {
        slots[id] = nil
        if !manyStates.isEmpty { manyStates[id] = nil }
    }

    public func addSegment(_ n: UInt32) {
        if segments[n] == nil { segments[n] = SegmentStats() }
    }

    /// Accounts `bytes` of any record written to segment `n`.
    public func noteWritten(segment n: UInt32, bytes: Int) {
        segments[n, default: SegmentStats()].totalBytes += Int64(bytes)
    }

    /// A message record (new, or a compacted copy) is at `location`. If the
    /// message was live elsewhere, it moves; states merge (final wins).
    /// Returns false (and tracks nothing) when no recipient is pending.
    @discardableResult
    public func place(_ id: MessageID, at location: MessageLocation, states: RecipientStates) -> Bool {
        var st = states
        if let old = entry(id) {
            st.merge(old.states)
            unpin(old.location)
        }
        guard st.pendingCount > 0 else {
            remove(id)
            return false
        }
        store(id, Entry(location: location, states: st))
        segments[location.segment, default: SegmentStats()].liveMessages += 1
        segments[location.segment, default: SegmentStats()].liveBytes += Int64(location.recordLength)
        return true
    }

    /// Takes a message out again if it is still at `location` (its record
    /// never became durable).
    public func forget(_ id: MessageID, at location: MessageLocation) {
        guard let s = slots[id], s.location == location else { return }
        remove(id)
        unpin(location)
    }

    private func unpin(_ loc: MessageLocation) {
        guard var s = segments[loc.segment] else { return }
        s.liveMessages -= 1
        s.liveBytes -= Int64(loc.recordLength)
        segments[loc.segment] = s
    }

    /// An outcome record written in segment `writtenIn`. Returns the message's
    /// remaining pending count, or nil if the message is not live.
    @discardableResult
    public func applyOutcome(_ id: MessageID, recipient: Int, state: RecipientState, writtenIn: UInt32) -> Int? {
        guard var e = entry(id), recipient >= 0, recipient < e.states.count else { return nil }
        if e.location.segment != writtenIn && writtenIn > e.location.segment {
            segments[writtenIn, default: SegmentStats()].dependsOn.insert(e.location.segment)
        }
        if e.states[recipient] == .pending { e.states[recipient] = state }
        let pending = e.states.pendingCount
        if pending == 0 {
            remove(id)
            unpin(e.location)
        } else {
            store(id, e)
        }
        return pending
    }

    /// Segments that can be deleted now, oldest first (never `active`).
    public func deletableSegments(active: UInt32?) -> [UInt32] {
        var gone: Set<UInt32> = []
        var result: [UInt32] = []
        for n in segments.keys.sorted() where n != active {
            guard let s = segments[n], s.liveMessages == 0 else { continue }
            if s.dependsOn.allSatisfy({ segments[$0] == nil || gone.contains($0) }) {
                gone.insert(n)
                result.append(n)
            }
        }
        return result
    }

    public func removeSegment(_ n: UInt32) { segments[n] = nil }

    /// Non-active segments whose live bytes fell under `threshold` of their size.
    public func compactionCandidates(threshold: Double, active: UInt32?, minimumBytes: Int64 = 0) -> [UInt32] {
        segments.filter { $0.key != active && $0.value.liveMessages > 0 && $0.value.totalBytes >= minimumBytes
                          && $0.value.liveRatio < threshold }
            .map(\.key).sorted()
    }

    /// The live messages whose record is in segment `n`, in file order.
    public func liveMessages(inSegment n: UInt32) -> [(MessageID, Entry)] {
        var found: [(MessageID, LiveMessageTable.Slot)] = []
        slots.forEach { id, s in if s.segment == n { found.append((id, s)) } }
        return found.sorted { $0.1.offset < $1.1.offset }
            .map { ($0.0, Entry(location: $0.1.location, states: states($0.0, $0.1))) }
    }
}
