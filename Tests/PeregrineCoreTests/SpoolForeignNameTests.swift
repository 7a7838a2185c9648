#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import PeregrineSpool

/// Names in a spool directory that this spool never writes: a segment number
/// at the top of UInt32 (the next number used to overflow), non-canonical
/// segment names, and stream directories such as `loop--1` (a negative stream
/// index the daemon used as an array index). Recovery must neither trap nor
/// read them, and must say what it left alone.
@Suite struct SpoolForeignNameTests {
    @Test func segmentNamesThisSpoolNeverWritesAreLeftAloneAndReported() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let dir = tmp.path + "/loop-0"
        let written = try SpoolRecoveryTests.writeMessages(dir, count: 3)
        let segment = SpoolFixtures.readFile(SpoolRecovery.segmentPath(directory: dir, number: 1))
        // Same bytes under names the writer never produces.
        for name in ["4294967295.seg", "2147483648.seg", "2.seg", "+3.seg", "0000004.seg", "000000.seg", "x.seg"] {
            SpoolFixtures.writeFile(dir + "/" + name, segment)
        }
        var logged: [String] = []
        let r = try SpoolRecovery.recover(directory: dir, log: { logged.append($0) }).get()
        #expect(r.segments.map(\.number) == [1])
        #expect(r.messages.map(\.id) == written.map(\.0))
        #expect(r.nextSegment == 2)
        for name in ["4294967295.seg", "2147483648.seg", "2.seg", "+3.seg", "0000004.seg", "000000.seg", "x.seg"] {
            #expect(logged.contains { $0.hasPrefix(dir + "/" + name + ": not a segment name") }, "\(name): \(logged)")
        }
        // Left alone: still there, unchanged.
        #expect(SpoolFixtures.readFile(dir + "/4294967295.seg") == segment)
    }

    @Test func theHighestAcceptedSegmentNumberStillHasASuccessor() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        let top = SpoolRecovery.maxSegmentNumber
        let w = try SpoolSyncWriter(directory: tmp.path, firstSegment: top)
        _ = try w.append(id: SpoolFixtures.id(1), envelope: SpoolFixtures.envelope(1), body: [1, 2, 3])
        try w.sync()
        let r = try SpoolRecovery.recover(directory: tmp.path, log: { _ in }).get()
        #expect(r.segments.map(\.number) == [top])
        #expect(r.messages.count == 1)
        #expect(r.nextSegment == top + 1)
    }

    @Test func streamDirectoriesOnlyInThePlainDecimalForm() throws {
        let tmp = SpoolTempDir(); defer { tmp.remove() }
        for name in ["loop-0", "loop-1", "loop-12", "loop--1", "loop-+1", "loop-01", "loop-", "loop-1x",
                     "loop-9999999", "loop-99999999999999999999", "other"] {
            #expect(mkdir(tmp.path + "/" + name, 0o755) == 0, "\(name)")
        }
        #expect(SpoolRecovery.listStreams(spoolDirectory: tmp.path) == ["loop-0", "loop-1", "loop-12"].map { tmp.path + "/" + $0 })
        #expect(SpoolRecovery.streamNumber(directoryName: "loop-12") == 12)
        #expect(SpoolRecovery.streamNumber(directoryName: "loop--1") == nil)
        #expect(SpoolRecovery.segmentNumber(fileName: "000001.seg") == 1)
        #expect(SpoolRecovery.segmentNumber(fileName: "1234567.seg") == 1_234_567)
        #expect(SpoolRecovery.segmentNumber(fileName: "4294967295.seg") == nil)
    }
}
