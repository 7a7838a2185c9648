import Testing
import Glibc
import Foundation
@testable import PeregrineDaemon
@testable import PeregrineAccounting

/// `log-file`: timestamped lines, rotation like the accounting files, a bounded
/// pending buffer whose drops are counted and reported in the log itself.
@Suite("Daemon log file", .timeLimit(.minutes(10)))
struct DaemonLogFileTests {
    static let secondNanos: Int64 = 1_000_000_000
    /// 2026-11-29 08:41:36.250 UTC.
    static let start = t0 * secondNanos + 250_000_000

    static func lines(_ path: String) -> [String] {
        readText(path).split(separator: "\n").map(String.init)
    }

    @Test func timestampsAreISO8601UTCWithMilliseconds() {
        var out: [UInt8] = []
        DaemonLogFile.appendTimestamp(Self.start, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "2026-11-29T08:41:36.250Z")
        out = []
        DaemonLogFile.appendTimestamp(7, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "1970-01-01T00:00:00.000Z")
    }

    @Test func eachLineIsOneTimestampedLine() throws {
        let dir = makeTempDir("logfile-lines")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = FakeWallClock(Self.start)
        let log = try DaemonLogFile(options: .init(path: dir + "/log"), wallClock: clock.read)
        log.write("reloaded /etc/peregrine.conf")
        clock.advance(1_005 * 1_000_000)
        log.write("reload failed:\nline two")  // one event, one line
        #expect(log.flush())
        log.close()
        #expect(Self.lines(dir + "/log") == ["2026-11-29T08:41:36.250Z reloaded /etc/peregrine.conf",
                                             "2026-11-29T08:41:37.255Z reload failed: line two"])
    }

    /// 0640 unless log-file-world-readable: the log names senders and recipients.
    @Test func theFileIsNotWorldReadableUnlessAsked() throws {
        let dir = makeTempDir("logfile-mode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func mode(_ path: String) -> mode_t {
            var st = stat()
            return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
        }
        let closed = try DaemonLogFile(options: .init(path: dir + "/log"))
        closed.close()
        #expect(mode(dir + "/log") == 0o640)
        var o = DaemonLogFile.Options(path: dir + "/log")
        o.worldReadable = true
        let open = try DaemonLogFile(options: o)
        open.close()
        #expect(mode(dir + "/log") == 0o644)
    }

    /// A line that does not fit the pending buffer is dropped and counted,
    /// and the log says so once the writer catches up; later lines get through.
    @Test func aFullBufferDropsAndCountsLines() throws {
        let dir = makeTempDir("logfile-drop")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = DaemonLogFile.Options(path: dir + "/log")
        o.maxPendingBytes = 100
        let log = try DaemonLogFile(options: o, wallClock: FakeWallClock(Self.start).read)
        log.write(String(repeating: "x", count: 200))
        log.write("short")
        #expect(log.flush())
        log.close()
        #expect(log.droppedLines == 1)
        let lines = Self.lines(dir + "/log")
        #expect(lines.contains { $0.hasSuffix(" short") }, "\(lines)")
        #expect(lines.contains { $0.contains("1 log line(s) dropped") }, "\(lines)")
        #expect(!lines.contains { $0.contains("xxxx") })
    }

    /// Daily rotation at midnight UTC, named like the accounting files.
    @Test func rotatesAtTheIntervalBoundary() throws {
        let dir = makeTempDir("logfile-interval")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = FakeWallClock(Self.start)
        let log = try DaemonLogFile(options: .init(path: dir + "/peregrine.log"), wallClock: clock.read)
        log.write("before midnight")
        #expect(log.flush())
        // 2026-11-30 00:00:01 UTC.
        clock.set((t0 - 8 * 3600 - 41 * 60 - 36 + 86_400 + 1) * Self.secondNanos)
        log.write("after midnight")
        #expect(log.flush())
        log.close()
        #expect(log.rotatedPaths == [dir + "/peregrine-20261130-000001.log"])
        #expect(Self.lines(dir + "/peregrine-20261130-000001.log").map { String($0.dropFirst(25)) } == ["before midnight"])
        #expect(Self.lines(dir + "/peregrine.log").map { String($0.dropFirst(25)) } == ["after midnight"])
    }

    /// `log-rotate keep=2 max-size=…`: rotation by size, and only the newest
    /// two rotated files are kept (an unrelated file beside them is untouched).
    @Test func rotatesBySizeAndKeepsTheNewest() throws {
        let dir = makeTempDir("logfile-size")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/log-notes.txt", contents: Data("mine".utf8))
        var o = DaemonLogFile.Options(path: dir + "/log")
        o.maxSize = 100
        o.keep = 2
        o.moveInterval = nil
        let clock = FakeWallClock(Self.start)
        let log = try DaemonLogFile(options: o, wallClock: clock.read)
        for i in 0..<5 {
            log.write("event \(i) " + String(repeating: "-", count: 50))
            #expect(log.flush())
            clock.advance(Self.secondNanos)
        }
        log.close()
        #expect(log.rotatedPaths.count == 4, "\(log.rotatedPaths)")
        let files = listDir(dir)
        #expect(files == ["log", "log-20261129-084140", "log-20261129-084139", "log-notes.txt"].sorted(), "\(files)")
        #expect(Self.lines(dir + "/log").count == 1)
        #expect(Self.lines(dir + "/log")[0].contains("event 4"))
        #expect(Self.lines(dir + "/log-20261129-084140")[0].contains("event 3"))
    }

    @Test func rotatedNamesAreListedOldestFirstAndOthersIgnored() throws {
        let dir = makeTempDir("rotated-list")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["acct-20261129-084136-1.csv", "acct-20261129-084136.csv", "acct-20261128-000000.csv",
                     "acct.csv", "acct-notes.csv", "acct-20261129-08413x.csv", "other-20261129-084136.csv"] {
            _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data())
        }
        #expect(RotatedFiles.list(for: dir + "/acct.csv").map { ($0 as NSString).lastPathComponent }
                == ["acct-20261128-000000.csv", "acct-20261129-084136.csv", "acct-20261129-084136-1.csv"])
    }
}
