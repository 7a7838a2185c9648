#if canImport(Glibc)
import Glibc
#endif
import Testing
import PeregrineIO
@testable import PeregrineSpool

/// Segments that go missing, are emptied or damaged (issue #12 item 6):
/// recovery and `spool-check` report each, keep every intact record, and move
/// damaged files aside instead of cutting or deleting them.
@Suite(.blockingIO) struct SpoolSegmentFaultTests {
    /// Writes `count` messages over several small segments; returns ids by segment.
    static func writeSegments(_ dir: String, count: Int = 60) throws -> [UInt32: [MessageID]] {
        let written = try SpoolRecoveryTests.writeMessages(dir, count: count, bodySize: 300, segmentSize: 4_000)
        var bySegment: [UInt32: [MessageID]] = [:]
        for (id, _, loc) in written { bySegment[loc.segment, default: []].append(id) }
        return bySegment
    }

    static func ids(_ r: SpoolStreamRecovery) -> Set<MessageID> { Set(r.messages.map(\.id)) }

    @Test func deletedMiddleSegmentIsReportedAndTheRestRecovered() throws {
        let tmp = SpoolTempDir("seg-missing"); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        let bySegment = try Self.writeSegments(dir)
        #expect(bySegment.count >= 4)
        let victim: UInt32 = 2
        let path = SpoolRecovery.segmentPath(directory: dir, number: victim)
        #expect(unlink(path) == 0)
        let expected = Set(bySegment.filter { $0.key != victim }.values.joined())

        // spool-check (read-only) reports it: before the fix it said "problems: 0" with the messages gone.
        let (status, out, _) = try SpoolCheckCommandTests.run(["spool-check", tmp.path])
        #expect(status == 1)
        #expect(out.contains("problem: \(path): missing"), "\(out)")
        #expect(!out.contains("problems: 0"))

        var lines: [String] = []
        let r = try SpoolRecovery.recover(directory: dir, log: { lines.append($0) }).get()
        #expect(r.problems == [.segmentMissing(path: path)])
        #expect(Self.ids(r) == expected)
        #expect(lines.contains { $0.contains("missing") })
        // Start-up leaves a marker: the loss stays visible after the writer's next catalogue forgets the segment.
        #expect(SpoolFixtures.fileSize(SpoolRecovery.quarantineDirectory(stream: dir) + "/000002.seg.missing") == 0)
        let (status2, out2, _) = try SpoolCheckCommandTests.run(["spool-check", tmp.path])
        #expect(status2 == 1 && out2.contains("000002.seg.missing"), "\(out2)")
    }

    /// Segments the writer deleted itself are not reported: it records the
    /// deletion durably before the unlink. Real writer, every backend.
    @Test(arguments: BackendKind.testable) func segmentsTheWriterDeletedAreNotReported(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(L.self)
                let tmp = SpoolTempDir("seg-deleted"); defer { tmp.remove() }
                let dir = tmp.path + "/loop-0"
                let w = try SpoolWriter(loop: loop, directory: dir, options: SpoolWriterOptions(segmentSize: 8_000))
                var acked: [MessageID] = []
                let body = [UInt8](repeating: 0x41, count: 900)
                SpoolLoops.run(loop) { finish in
                    var sent = 0
                    func next() {
                        guard sent < 40 else {
                            // Deliver the first 30: their segments become deletable.
                            for id in acked.prefix(30) { for r in 0 ..< 2 { w.recordOutcome(id, recipient: r, state: .delivered) } }
                            w.flush { _ in SpoolLoops.poll(loop) {
                                guard w.isIdle, w.stats.segmentsDeleted > 0 else { return false }
                                finish(); return true
                            } }
                            return
                        }
                        sent += 1
                        var id: MessageID?
                        body.withUnsafeBytes { b in
                            id = w.append(envelope: SpoolFixtures.envelope(sent), body: b) { r in
                                // Durable callbacks never run inside `append`: `id` is set by now.
                                if case .success = r, let id { acked.append(id) }
                                next()
                            }
                        }
                    }
                    next()
                }
                #expect(w.stats.segmentsDeleted > 0, "\(kind)")
                let r = try SpoolRecovery.recover(directory: dir, mode: .readOnly, log: { _ in }).get()
                #expect(r.problems.isEmpty, "\(kind): \(r.problems)")
                #expect(Set(r.messages.map(\.id)) == Set(acked.suffix(10)), "\(kind)")
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

    @Test func zeroLengthSegmentIsReportedAndMovedAside() throws {
        let tmp = SpoolTempDir("seg-empty"); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        let bySegment = try Self.writeSegments(dir)
        let victim: UInt32 = 2
        let path = SpoolRecovery.segmentPath(directory: dir, number: victim)
        #expect(truncate(path, 0) == 0)
        let expected = Set(bySegment.filter { $0.key != victim }.values.joined())

        let (status, out, _) = try SpoolCheckCommandTests.run(["spool-check", tmp.path])
        #expect(status == 1)
        #expect(out.contains("problem: \(path): empty segment"), "\(out)")

        let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
        #expect(r.problems == [.emptySegment(path: path)])
        #expect(Self.ids(r) == expected)
        #expect(SpoolFixtures.fileSize(path) == -1)
        #expect(SpoolFixtures.fileSize(SpoolRecovery.quarantineDirectory(stream: dir) + "/000002.seg") == 0)
        // Not reported again as missing on the next start.
        let again = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
        #expect(again.problems.isEmpty && Self.ids(again) == expected)
    }

    /// Garbage at the end of a segment that is not the newest used to be taken
    /// for a torn tail and cut. Now it is reported, the file is kept whole in
    /// quarantine, and every intact record before the damage is recovered.
    @Test func garbageInAnOlderSegmentIsQuarantinedNotCut() throws {
        let tmp = SpoolTempDir("seg-garbage"); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        let bySegment = try Self.writeSegments(dir)
        let victim: UInt32 = 1
        let path = SpoolRecovery.segmentPath(directory: dir, number: victim)
        let original = SpoolFixtures.readFile(path)
        // Overwrite the segment's last two records (from the second-last record's start) with garbage.
        let written = try SpoolRecovery.recover(directory: dir, mode: .readOnly, log: { _ in }).get()
        let inVictim = written.messages.filter { $0.location.segment == victim }
        let cut = Int(inVictim[inVictim.count - 2].location.offset)
        var damaged = Array(original[0 ..< cut])
        damaged += [UInt8](repeating: 0xEE, count: original.count - cut)
        SpoolFixtures.writeFile(path, damaged)
        var expected = Set(bySegment.values.joined())
        for m in inVictim.suffix(2) { expected.remove(m.id) }

        let (status, out, _) = try SpoolCheckCommandTests.run(["spool-check", tmp.path])
        #expect(status == 1)
        #expect(out.contains("problem: \(path): corrupt record at offset \(cut)"), "\(out)")
        #expect(SpoolFixtures.readFile(path) == damaged, "spool-check changed the file")

        var lines: [String] = []
        let all = try SpoolRecovery.recoverAll(spoolDirectory: tmp.path, log: { lines.append($0) }).get()
        let r = all[0]
        let copy = SpoolRecovery.quarantineDirectory(stream: dir) + "/000001.seg"
        #expect(r.problems == [.segmentCorrupt(path: path, offset: Int64(cut)), .quarantined(path: path, to: copy)])
        #expect(Self.ids(r) == expected)
        #expect(SpoolFixtures.readFile(copy) == damaged, "the damaged segment must be kept whole")
        #expect(SpoolFixtures.readFile(path) == Array(original[0 ..< cut]))
        #expect(lines.contains { $0.contains("corrupt data at offset \(cut)") })
        // The rewritten segment is clean; spool-check still points at the quarantined copy.
        let again = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
        #expect(again.problems.isEmpty && Self.ids(again) == expected)
        let (status2, out2, _) = try SpoolCheckCommandTests.run(["spool-check", tmp.path])
        #expect(status2 == 1 && out2.contains("quarantine/000001.seg: damaged segment moved aside"), "\(out2)")
    }

    /// A torn tail in the newest segment is a crash mid-write: accepted and cut.
    @Test func tornTailInTheNewestSegmentIsAccepted() throws {
        let tmp = SpoolTempDir("seg-torn"); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        _ = try Self.writeSegments(dir)
        let newest = SpoolRecovery.listSegments(directory: dir).last ?? 0
        let path = SpoolRecovery.segmentPath(directory: dir, number: newest)
        var bytes = SpoolFixtures.readFile(path)
        let size = bytes.count
        bytes.removeLast(7)
        SpoolFixtures.writeFile(path, bytes)
        let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
        #expect(r.problems.count == 1)
        if case .tornTail(let p, _, _) = r.problems.first { #expect(p == path) } else { Issue.record("\(r.problems)") }
        #expect(SpoolFixtures.fileSize(path) < size - 7)
        #expect(SpoolFixtures.fileSize(SpoolRecovery.quarantineDirectory(stream: dir)) == -1)
    }
}
