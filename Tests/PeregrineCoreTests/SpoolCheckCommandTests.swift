import Foundation
import PeregrineTestSupport
import Testing
@testable import PeregrineSpool

/// Runs the built `peregrine spool-check` against a spool with known content.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SpoolCheckCommandTests {
    static func run(_ args: [String]) throws -> (Int32, String, String) {
        guard let exe = SpoolCrashTests.peregrinePath() else {
            Issue.record("peregrine executable not found next to the test bundle")
            return (-1, "", "")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try ChildProcess.run(p)
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test func reportsSegmentsMessagesRecipientsAndBytes() throws {
        let tmp = SpoolTempDir("check"); defer { tmp.remove() }
        let w = try SpoolSyncWriter(directory: tmp.path + "/loop-0")
        for i in 0..<5 { _ = try w.append(id: SpoolFixtures.id(i), envelope: SpoolFixtures.envelope(i, recipients: 2), body: [1, 2, 3]) }
        try w.appendOutcome(id: SpoolFixtures.id(0), recipient: 0, state: .delivered)
        try w.appendOutcome(id: SpoolFixtures.id(0), recipient: 1, state: .bounced)
        try w.appendOutcome(id: SpoolFixtures.id(1), recipient: 1, state: .expired)
        try w.sync()
        let (status, out, _) = try Self.run(["spool-check", tmp.path])
        #expect(status == 0)
        #expect(out.contains("segments: 1"))
        #expect(out.contains("live messages: 4"))
        #expect(out.contains("pending 7, delivered 0, bounced 0, expired 1"))
        #expect(out.contains("problems: 0"))
    }

    /// A `*.seg` name the writer never produces (4294967295.seg used to trap
    /// recovery) is listed as ignored, not read, and is not counted as damage.
    @Test func segmentNamesThisSpoolNeverWritesAreListedAsIgnored() throws {
        let tmp = SpoolTempDir("check-foreign"); defer { tmp.remove() }
        let w = try SpoolSyncWriter(directory: tmp.path + "/loop-0")
        _ = try w.append(id: SpoolFixtures.id(0), envelope: SpoolFixtures.envelope(0), body: [1, 2, 3])
        try w.sync()
        SpoolFixtures.writeFile(tmp.path + "/loop-0/4294967295.seg", Array("junk".utf8))
        let (status, out, err) = try Self.run(["spool-check", tmp.path])
        #expect(status == 0, "\(err)")
        #expect(out.contains("ignored: 4294967295.seg"))
        #expect(out.contains("live messages: 1"))
        #expect(out.contains("problems: 0"))
    }

    @Test func unknownSubcommandAndMissingArgument() throws {
        let (s1, _, e1) = try Self.run(["frobnicate"])
        #expect(s1 == 2 && e1.contains("usage"))
        let (s2, _, _) = try Self.run(["spool-check"])
        #expect(s2 == 2)
    }
}
