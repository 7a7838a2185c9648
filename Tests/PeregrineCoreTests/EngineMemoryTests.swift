import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import PeregrineSpool
@testable import PeregrineEngine

/// What one queued message costs on the heap while it waits in a delayed
/// queue (the backlog benchmark's state: sink down, everything deferred):
/// the scheduler's message object, its queue entry, and the spool's live-set
/// entry. Heap bytes are counted with malloc_info (glibc's in-use total over
/// all arenas), not timed; the bound keeps the compaction of issue #18.
@Suite(.serialized) struct EngineMemoryTests {
    static let count = 100_000

    /// Messages as LoopWorker.makeMessage builds them from a spooled
    /// envelope: every string decoded from bytes (heap, not literals).
    static func makeMessages(_ n: Int) -> [QueuedMessage] {
        let sender = Array("bounces+campaign@mailer.example.com".utf8)
        var out: [QueuedMessage] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            let rcpt = Array("u\(i % 100_000)@example.net".utf8)
            out.append(QueuedMessage(id: MessageID(hi: 1, lo: UInt64(i)), sender: String(decoding: sender, as: UTF8.self),
                                     recipients: [.init(address: String(decoding: rcpt, as: UTF8.self))],
                                     vmta: "default", jobId: nil, envId: nil, receivedAtWall: 1_700_000_000,
                                     receivedAt: UInt64(i), bodySize: 4096, recordLength: 4300, stream: 0))
        }
        return out
    }

    /// Bytes per message of each part, from the blocks and capacities the
    /// parts hold: each message's malloc chunk, the delayed heap's array
    /// capacity, the live table's chunks and index. Deterministic, unlike the
    /// process heap's totals, which the suites running beside this one move
    /// (a full run beside stress-ng read 711 B for these 264).
    static func measure() -> (message: Int, queueEntry: Int, liveSet: Int) {
        let n = count
        let messages = makeMessages(n)
        // glibc's chunk is the usable size plus its size word.
        let messageBytes = messages.reduce(0) { $0 + malloc_usable_size_of($1) + MemoryLayout<Int>.size }
        let q = DeliveryQueue(key: QueueKey(domain: "example.net", vmta: "default"), policy: DomainSettings())
        for m in messages { q.delayUntil(DeliveryItem(message: m, recipients: [0]), m.receivedAt &+ 1_000_000_000) }
        let live = SpoolLiveSet()
        for m in messages {
            live.place(m.id, at: MessageLocation(segment: 1, offset: Int64(m.receivedAt) * 4300, recordLength: 4300,
                                                 bodyOffset: 200), states: RecipientStates(count: 1))
        }
        // Both are private stored properties; reflection reads them without widening the API for a test.
        let heap = Mirror(reflecting: q).descendant("delayed") as? DeadlineHeap<DeliveryItem>
        let table = Mirror(reflecting: live).descendant("slots") as? LiveMessageTable
        let queueBytes = (heap?.nodes.capacity ?? 0) * MemoryLayout<DeadlineHeap<DeliveryItem>.Node>.stride
        let liveBytes = table?.allocatedBytes ?? 0
        withExtendedLifetime((messages, q, live)) {}
        return (messageBytes / n, queueBytes / n, liveBytes / n)
    }

    @Test func bytesPerQueuedMessageStayUnderTheTarget() {
        // The layout is deterministic: each part's size is checked exactly.
        #expect(MemoryLayout<DeliveryItem>.stride <= 24)
        #expect(LiveMessageTable.recordStride <= 40)
        // One heap block per message: fields, then the envelope's bytes (a
        // one-recipient message with the 35-byte sender and an 18-byte address
        // below: 208 B in two blocks before issue #18's second step, 160 now).
        #expect(MemoryLayout<QueuedMessageFields>.size <= 72)
        #expect(typicalMessageBlockSize() <= 152, "QueuedMessage's heap block grew: \(typicalMessageBlockSize())")
        let b = Self.measure()
        #expect(b.queueEntry > 0 && b.liveSet > 0, "the delayed heap or the live table was not found by reflection")
        let total = b.message + b.queueEntry + b.liveSet
        print("EngineMemoryTests: bytes per queued message: message \(b.message), queue entry \(b.queueEntry), "
              + "spool live set \(b.liveSet), total \(total); layout: QueuedMessage instance "
              + "\(typicalMessageBlockSize()) (one block), DeliveryItem \(MemoryLayout<DeliveryItem>.stride), "
              + "live-set entry \(MemoryLayout<SpoolLiveSet.Entry>.stride)")
        #expect(total <= Self.bound, "heap per queued message \(total) B (message \(b.message), queue \(b.queueEntry), live set \(b.liveSet))")
    }

    /// 779 B on main before issue #18's compaction; 385 B after; 263 B with the
    /// envelope in the message's own block (about 311 B before it: two blocks,
    /// 112 + 96, for the one-block 160). 100,000 messages; the queue entry is
    /// the delayed heap's array capacity, power-of-two slack included.
    static let bound = 285

    /// The usable size of the heap block of a message as `makeMessages` builds them.
    private func typicalMessageBlockSize() -> Int {
        malloc_usable_size_of(Self.makeMessages(1)[0])
    }
}

@_silgen_name("malloc_usable_size") private func c_malloc_usable_size(_ p: UnsafeMutableRawPointer?) -> Int

/// The heap block size of a class instance (its malloc chunk, header included).
private func malloc_usable_size_of(_ o: AnyObject) -> Int {
    c_malloc_usable_size(Unmanaged.passUnretained(o).toOpaque())
}

/// The compact layouts keep every field: envelope text (narrow and wide
/// offsets), recipient index runs and lists, live-set slots of messages with
/// more than 32 recipients.
@Suite struct CompactQueuedMessageTests {
    static func recipients(_ n: Int, addressLength: Int) -> [QueuedMessage.Recipient] {
        (0..<n).map { i in
            let local = "r\(i)-" + String(repeating: "x", count: max(0, addressLength - 20))
            return .init(address: "\(local)@Dom\(i % 3).Example", orcpt: i % 2 == 0 ? "rfc822;orig\(i)@example.org" : nil,
                         notify: i % 4 == 0 ? [.success, .failure] : [])
        }
    }

    @Test(arguments: [(1, 20), (40, 30), (300, 260)]) func envelopeFieldsRoundTrip(count: Int, addressLength: Int) {
        let rcpts = Self.recipients(count, addressLength: addressLength)
        let m = QueuedMessage(id: MessageID(hi: 7, lo: 9), sender: "bounce@example.com", recipients: rcpts, vmta: "vmta-α",
                              jobId: "job 42", envId: "env-1", ret: .headers, receivedAtWall: 1, receivedAt: 2,
                              bodySize: 3, recordLength: 4, stream: 5)
        #expect(m.sender == "bounce@example.com" && m.jobId == "job 42" && m.envId == "env-1" && m.ret == .headers)
        #expect(m.vmta == "vmta-α" && m.pool == nil && m.bodySize == 3 && m.recordLength == 4 && m.stream == 5)
        #expect(Array(m.recipients) == rcpts)
        for i in rcpts.indices { #expect(m.recipients.domain(i) == rcpts[i].domain) }
        #expect(m.pendingCount == count)
        m.pool = "pool1"
        #expect(m.pool == "pool1")
        let part = m.part(keeping: [count - 1])
        #expect(part.pendingCount == 1 && part.states[count - 1] == .pending && part.pool == "pool1")
        #expect(part.sender == m.sender && Array(part.recipients) == rcpts)
        #expect(m.finish(recipient: 0, as: .delivered) && !m.finish(recipient: 0, as: .bounced))
        #expect(m.pendingCount == count - 1)
        let empty = QueuedMessage(id: MessageID(hi: 0, lo: 0), sender: "", recipients: [], vmta: "v", jobId: nil, envId: nil,
                                  receivedAtWall: 0, receivedAt: 0, bodySize: 0, stream: 0)
        #expect(empty.sender == "" && empty.jobId == nil && empty.recipients.isEmpty && empty.isComplete)
    }

    /// The queue domain is lowered byte by byte for ASCII (no `lowercased()` copy);
    /// it must give what `Recipient.domain` gives, short, long and non-ASCII.
    @Test func recipientDomainsAreLoweredLikeTheStringForm() {
        let rcpts: [QueuedMessage.Recipient] = [.init(address: "A@Example.NET"),
                                                .init(address: "b@MAIL.A-Very-Long-Subdomain.Example.ORG"),
                                                .init(address: "c@Exämple.DE"), .init(address: "\"x@y\"@Z.[192.0.2.1]"),
                                                .init(address: "no-at-sign"), .init(address: "d@")]
        let m = QueuedMessage(id: MessageID(hi: 1, lo: 2), sender: "s@example.com", recipients: rcpts, vmta: "v",
                              jobId: nil, envId: nil, receivedAtWall: 1, receivedAt: 2, bodySize: 3, stream: 0)
        #expect((0..<rcpts.count).map { m.recipients.domain($0) }
                == ["example.net", "mail.a-very-long-subdomain.example.org", "exämple.de", "z.[192.0.2.1]", "", ""])
        for i in rcpts.indices { #expect(m.recipients.domain(i) == rcpts[i].domain) }
    }

    @Test func recipientIndexesKeepRunsAndLists() {
        for indexes in [[0], [3, 4, 5], [], [2, 0], [1, 3, 7], [70_000, 70_001]] {
            let r = RecipientIndexes(indexes)
            #expect(Array(r) == indexes)
            var item = DeliveryItem(message: QueuedMessage(id: MessageID(hi: 0, lo: 1), sender: "s@x", recipients: [],
                                                           vmta: "v", jobId: nil, envId: nil, receivedAtWall: 0,
                                                           receivedAt: 0, bodySize: 0, stream: 0),
                                    recipients: indexes, attempts: 3)
            #expect(Array(item.recipients) == indexes && item.attempts == 3)
            item.attempts += 1
            item.recipients = RecipientIndexes([9])
            #expect(Array(item.recipients) == [9] && item.attempts == 4)
        }
    }

    @Test func liveSetKeepsStatesOfLargeMessages() {
        let live = SpoolLiveSet()
        let big = MessageID(hi: 1, lo: 1), small = MessageID(hi: 1, lo: 2)
        let loc = MessageLocation(segment: 3, offset: 1 << 33, recordLength: 5000, bodyOffset: 700)
        #expect(live.place(big, at: loc, states: RecipientStates(count: 40)))
        #expect(live.place(small, at: loc, states: RecipientStates(count: 2)))
        #expect(live.applyOutcome(big, recipient: 35, state: .bounced, writtenIn: 3) == 39)
        #expect(live.applyOutcome(small, recipient: 1, state: .delivered, writtenIn: 3) == 1)
        #expect(live.entry(big)?.location == loc && live.entry(big)?.states[35] == .bounced && live.entry(big)?.states[34] == .pending)
        #expect(live.entry(small)?.states[1] == .delivered && live.entry(small)?.states[0] == .pending)
        for r in 0..<40 where r != 35 { live.applyOutcome(big, recipient: r, state: .delivered, writtenIn: 3) }
        #expect(live.entry(big) == nil && live.liveMessageCount == 1)
    }
}
