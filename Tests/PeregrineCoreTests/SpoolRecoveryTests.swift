#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import PeregrineSpool

@Suite struct SpoolRecoveryTests {
    /// Writes `count` messages (body size varies) and returns their ids, bodies and locations.
    @discardableResult
    static func writeMessages(_ dir: String, count: Int, bodySize: Int = 300, recipients: Int = 2,
                              segmentSize: Int64 = 64 << 20) throws -> [(MessageID, [UInt8], MessageLocation)] {
        let w = try SpoolSyncWriter(directory: dir, segmentSize: segmentSize)
        var out: [(MessageID, [UInt8], MessageLocation)] = []
        for i in 0..<count {
            let id = SpoolFixtures.id(i)
            let body = SpoolFixtures.body(for: id, size: SpoolTestBody.size(id: id, nominal: bodySize))
            let loc = try w.append(id: id, envelope: SpoolFixtures.envelope(i, recipients: recipients), body: body)
            out.append((id, body, loc))
        }
        try w.sync()
        return out
    }

    static func bodyAt(_ path: String, _ loc: MessageLocation) -> [UInt8] {
        let all = SpoolFixtures.readFile(path)
        let start = Int(loc.offset) + Int(loc.bodyOffset), end = Int(loc.offset) + Int(loc.recordLength)
        guard end <= all.count else { return [] }
        return Array(all[start..<end])
    }

    @Test func writeRecoverRoundTrip() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        let written = try Self.writeMessages(dir, count: 500, segmentSize: 50_000)
        let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
        #expect(r.problems.isEmpty)
        #expect(r.segments.count > 1)
        #expect(r.messages.count == 500)
        #expect(r.nextSegment == UInt32(r.segments.count + 1))
        for (i, m) in r.messages.enumerated() {
            #expect(m.id == written[i].0)
            #expect(m.location == written[i].2)
            #expect(m.envelope == SpoolFixtures.envelope(i))
            #expect(m.states.pendingCount == 2)
            #expect(Self.bodyAt(SpoolRecovery.segmentPath(directory: dir, number: m.location.segment), m.location) == written[i].1)
        }
        let all = try SpoolRecovery.recoverAll(spoolDirectory: tmp.path, log: { _ in }).get()
        #expect(all.count == 1 && all[0].messages.count == 500)
    }

    @Test func outcomesFinaliseMessages() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let w = try SpoolSyncWriter(directory: tmp.path)
        for i in 0..<10 { _ = try w.append(id: SpoolFixtures.id(i), envelope: SpoolFixtures.envelope(i, recipients: 3), body: [1, 2, 3]) }
        for i in 0..<5 { for r in 0..<3 { try w.appendOutcome(id: SpoolFixtures.id(i), recipient: r, state: .delivered) } }
        try w.appendOutcome(id: SpoolFixtures.id(7), recipient: 1, state: .bounced)
        try w.sync()
        let r = try SpoolRecovery.recover(directory: tmp.path, log: { _ in }).get()
        #expect(r.messages.map(\.id) == (5..<10).map(SpoolFixtures.id))
        #expect(r.messages.first { $0.id == SpoolFixtures.id(7) }?.states[1] == .bounced)
        #expect(r.liveSet.segments[1]?.liveMessages == 5)
    }

    @Test func tornTailAtEveryByteOfTheLastRecord() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let dir = tmp.path + "/s"
        let written = try Self.writeMessages(dir, count: 6, bodySize: 120)
        let path = SpoolRecovery.segmentPath(directory: dir, number: 1)
        let original = SpoolFixtures.readFile(path)
        let last = written[5].2
        #expect(Int(last.offset) + Int(last.recordLength) == original.count)
        for cut in Int(last.offset) ..< original.count {
            for garbage in [false, true] {
                var bytes = Array(original[0..<cut])
                if garbage { bytes += [UInt8](repeating: 0xA5, count: 3) }  // junk after a partial write
                SpoolFixtures.writeFile(path, bytes)
                var lines: [String] = []
                let r = try SpoolRecovery.recover(directory: dir, log: { lines.append($0) }).get()
                #expect(r.messages.map(\.id) == written[0..<5].map(\.0), "cut \(cut)")
                if bytes.count > Int(last.offset) {
                    #expect(r.problems == [.tornTail(path: path, offset: last.offset, droppedBytes: Int64(bytes.count) - last.offset)], "cut \(cut)")
                    #expect(lines.count == 1)
                }
                #expect(SpoolFixtures.fileSize(path) == Int(last.offset), "cut \(cut)")
            }
        }
    }

    @Test func bitFlipInAMiddleRecordIsSkippedAndTheRestRecovered() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let dir = tmp.path + "/s"
        let written = try Self.writeMessages(dir, count: 20, bodySize: 200)
        let path = SpoolRecovery.segmentPath(directory: dir, number: 1)
        let original = SpoolFixtures.readFile(path)
        let victim = 9
        let loc = written[victim].2
        // Flip bits across the whole record: magic, kind, length, crc, envelope, body.
        var positions = Array(0 ..< 20)
        positions += [Int(loc.bodyOffset), Int(loc.recordLength) - 1, Int(loc.recordLength) / 2]
        for pos in positions {
            for bit in [0, 5] {
                var bytes = original
                bytes[Int(loc.offset) + pos] ^= UInt8(1 << bit)
                SpoolFixtures.writeFile(path, bytes)
                let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                var expected = written.map(\.0); expected.remove(at: victim)
                #expect(r.messages.map(\.id) == expected, "pos \(pos) bit \(bit)")
                // Reported, the damaged file kept whole in quarantine, the segment rewritten with its intact records.
                #expect(r.problems.first == .segmentCorrupt(path: path, offset: loc.offset), "pos \(pos) bit \(bit)")
                guard r.problems.count == 2, case .quarantined(let p, let copy) = r.problems[1], p == path else {
                    Issue.record("pos \(pos) bit \(bit): not quarantined: \(r.problems)")
                    continue
                }
                #expect(SpoolFixtures.readFile(copy) == bytes)
                #expect(SpoolFixtures.fileSize(path) == original.count - Int(loc.recordLength))
                let again = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                #expect(again.problems.isEmpty && again.messages.map(\.id) == expected)
                SpoolFixtures.writeFile(path, original)
            }
        }
    }

    @Test func readOnlyModeLeavesTornTailInPlace() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        try Self.writeMessages(tmp.path, count: 3)
        let path = SpoolRecovery.segmentPath(directory: tmp.path, number: 1)
        var bytes = SpoolFixtures.readFile(path); bytes.removeLast(10)
        SpoolFixtures.writeFile(path, bytes)
        let r = try SpoolRecovery.recover(directory: tmp.path, mode: .readOnly, log: { _ in }).get()
        #expect(r.messages.count == 2)
        #expect(SpoolFixtures.fileSize(path) == bytes.count)
    }

    @Test func recovers100kMessages() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let n = 100_000
        let w = try SpoolSyncWriter(directory: tmp.path, segmentSize: 8 << 20)
        let env = SpoolFixtures.envelope(1, recipients: 1)
        let body = [UInt8](repeating: 0x41, count: 64)
        for i in 0..<n { _ = try w.append(id: SpoolFixtures.id(i), envelope: env, body: body) }
        for i in stride(from: 0, to: n, by: 10) { try w.appendOutcome(id: SpoolFixtures.id(i), recipient: 0, state: .delivered) }
        try w.sync()
        let r = try SpoolRecovery.recover(directory: tmp.path, log: { _ in }).get()
        #expect(r.problems.isEmpty)
        #expect(r.messages.count == n - n / 10)
        #expect(r.liveSet.liveMessageCount == n - n / 10)
    }

    @Test func liveSetDeletionWaitsForOlderSegmentsItFinalised() {
        let live = SpoolLiveSet()
        let a = MessageID(hi: 0, lo: 1), b = MessageID(hi: 0, lo: 2)
        let s1 = RecipientStates(count: 1)
        live.place(a, at: MessageLocation(segment: 1, offset: 0, recordLength: 100, bodyOffset: 50), states: s1)
        live.place(b, at: MessageLocation(segment: 1, offset: 100, recordLength: 100, bodyOffset: 50), states: s1)
        live.noteWritten(segment: 1, bytes: 200)
        live.addSegment(2); live.noteWritten(segment: 2, bytes: 37)
        live.applyOutcome(a, recipient: 0, state: .delivered, writtenIn: 2)
        // Segment 2 has no live message but finalised one in segment 1, which is still there.
        #expect(live.deletableSegments(active: 3) == [])
        live.applyOutcome(b, recipient: 0, state: .bounced, writtenIn: 2)
        #expect(live.deletableSegments(active: 3) == [1, 2])
        #expect(live.deletableSegments(active: 1) == [])
    }

    /// A crash in the middle of compaction: the copy in a later segment and the
    /// original may both exist, or only the copy with outcomes for it in an
    /// older segment. Either way the message is recovered once, states merged.
    @Test func recoveryMergesCompactedCopies() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let a = SpoolFixtures.id(1), b = SpoolFixtures.id(2)
        let w = try SpoolSyncWriter(directory: tmp.path)
        let envA = SpoolFixtures.envelope(1, recipients: 3), envB = SpoolFixtures.envelope(2, recipients: 2)
        let bodyA = SpoolFixtures.body(for: a, size: 100), bodyB = SpoolFixtures.body(for: b, size: 100)
        _ = try w.append(id: a, envelope: envA, body: bodyA)            // segment 1
        _ = try w.append(id: b, envelope: envB, body: bodyB)
        try w.roll()
        try w.appendOutcome(id: a, recipient: 0, state: .delivered)     // segment 2
        try w.appendOutcome(id: b, recipient: 0, state: .bounced)
        try w.roll()
        var statesA = RecipientStates(count: 3); statesA[0] = .delivered
        let copyA = try bodyA.withUnsafeBytes { try w.append(id: a, envelope: envA, body: $0, states: statesA) }  // segment 3
        let copyB = try bodyB.withUnsafeBytes { try w.append(id: b, envelope: envB, body: $0, states: RecipientStates(count: 2)) }
        try w.appendOutcome(id: a, recipient: 2, state: .expired)
        try w.sync()

        // Both originals and copies present.
        var r = try SpoolRecovery.recover(directory: tmp.path, log: { _ in }).get()
        #expect(r.messages.map(\.id) == [a, b])
        #expect(r.messages.map(\.location) == [copyA, copyB])
        #expect(r.messages[0].states[0] == .delivered && r.messages[0].states[1] == .pending && r.messages[0].states[2] == .expired)
        #expect(r.messages[1].states[0] == .bounced)   // from segment 2, merged into the copy's pending state
        #expect(r.liveSet.segments[1]?.liveMessages == 0)

        // Original segment already deleted (recorded first, as the writer does): outcomes in segment 2 precede the copies.
        try w.appendSegmentDeleted(1)
        try w.sync()
        _ = unlink(SpoolRecovery.segmentPath(directory: tmp.path, number: 1))
        r = try SpoolRecovery.recover(directory: tmp.path, log: { _ in }).get()
        #expect(r.messages.map(\.id) == [a, b])
        #expect(r.messages[1].states[0] == .bounced)
        #expect(r.messages[0].states.pendingCount == 1)
        #expect(r.problems.isEmpty)
    }
}
