import Testing
import Glibc
import Foundation
@testable import PeregrineAccounting
@testable import PeregrineDaemon

/// Issue 14, Accounting: `record-fields` (PowerMTA's layout), `delete-after`,
/// `<acct-file |program>` and the `vmtaPool` field.
@Suite("Accounting options", .timeLimit(.minutes(10)), .blockingIO)
struct AccountingOptionsTests {
    func options(_ block: String) throws -> AccountingFileOptions {
        let c = try PeregrineConfig.parse(block, file: "a.conf")
        return try #require(c.accountingFiles.first)
    }

    func error(_ text: String) -> String? {
        do { _ = try PeregrineConfig.parse(text, file: "a.conf"); return nil } catch { return error.description }
    }

    /// The example of PowerMTA's user guide: one header for the file, the
    /// union of both types' fields; each record leaves the other type's column empty.
    @Test func recordFieldsMakeOneHeaderWithTheUnionOfColumns() throws {
        let dir = makeTempDir("acct-fields")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = try options("""
            <acct-file \(dir)/acct.csv>
                records d,b
                record-fields delivery timeLogged,orig,rcpt,dlvSourceIp
                record-fields b timeLogged,orig,rcpt,bounceCat
            </acct-file>
            """)
        #expect(o.recordFields[.delivered] == ["timeLogged", "orig", "rcpt", "dlvSourceIp"])
        o.flushThreshold = 1
        let w = try AccountingWriter(options: o, wallClock: FakeWallClock(t0).read)
        var bounce = sampleRecord(.bounced)
        bounce.bounceCat = "policy-related"
        bounce.orig = "a,b@sender.example"  // quoted: the projection keeps it one field
        w.append(sampleRecord(.delivered))
        w.append(bounce)
        w.close()
        #expect(readText(dir + "/acct.csv") == """
            type,timeLogged,orig,rcpt,dlvSourceIp,bounceCat\r
            d,2026-11-29 08:41:36+0000,bounces@sender.example,user@gmail.com,127.0.0.2,\r
            b,2026-11-29 08:41:36+0000,"a,b@sender.example",user@gmail.com,,policy-related\r

            """)
        let records = try AccountingCSVReader.readRecords(path: dir + "/acct.csv")
        #expect(records.map(\.bounceCat) == ["", "policy-related"])
        #expect(records[0].dsnStatus.isEmpty)  // not chosen
    }

    /// `*` adds every field not named yet, `!field` takes one out (a shape real configs use).
    @Test func starAndExclusions() throws {
        let o = try options("""
            <acct-file /tmp/x.csv>
                record-fields b jobId,dsnDiag,*,!timeImprinted,!dlvEsmtpAvailable,!rcpt
            </acct-file>
            """)
        let fields = try #require(o.recordFields[.bounced])
        #expect(Array(fields.prefix(3)) == ["jobId", "dsnDiag", "timeLogged"])
        #expect(!fields.contains("rcpt") && !fields.contains("dlvEsmtpAvailable") && fields.contains("vmtaPool"))
        #expect(fields.count == AccountingRecord.fieldNames.count - 1 - 2)
        // A type without record-fields keeps every column: the header is the full one.
        let columns = AccountingColumns(records: nil, recordFields: o.recordFields)
        #expect(Set(columns.names) == Set(AccountingRecord.fieldNames))
    }

    @Test(arguments: [
        ("record-fields d\n", "a.conf:2: record-fields expects TYPE field,field"),
        ("record-fields x timeLogged\n", "a.conf:2: record-fields: unknown record type 'x'"),
        ("record-fields d timeLogged,nosuch\n", "a.conf:2: record-fields: unknown field 'nosuch'"),
        ("record-fields d timeLogged\nrecord-fields delivery orig\n", "a.conf:3: record-fields for d records is already set"),
        ("record-fields d !timeLogged\n", "a.conf:2: record-fields d leaves no field"),
        ("delete-after soon\n", "a.conf:2:"),
        ("delete-after 0s\n", "a.conf:2: delete-after must be at least 1s"),
    ])
    func mistakes(_ body: String, _ expected: String) {
        let e = error("<acct-file /tmp/x.csv>\n\(body)</acct-file>\n")
        #expect(e?.hasPrefix(expected) == true, "\(e ?? "loaded")")
    }

    @Test func pipeBlocksRefuseFileOptions() {
        let e = error("<acct-file |/usr/local/bin/loader>\nmax-size 10M\n</acct-file>\n")
        #expect(e?.hasPrefix("a.conf:2: max-size does not apply to <acct-file |/usr/local/bin/loader>") == true, "\(e ?? "loaded")")
        let r = error("<acct-file |loader>\n</acct-file>\n")
        #expect(r?.contains("the program must be an absolute path") == true, "\(r ?? "loaded")")
        #expect(error("<acct-file /tmp/a.csv>\nrecords all\ndelete-after never\n</acct-file>\n") == nil)
    }

    /// delete-after: rotated files older than the age go at start-up and at
    /// each rotation; younger ones, the current file and other files stay.
    @Test func deleteAfterRemovesOldRotatedFiles() throws {
        let dir = makeTempDir("acct-delete")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let now = Int64(time(nil))
        func make(_ name: String, ageSeconds: Int64) {
            let p = dir + "/" + name
            _ = FileManager.default.createFile(atPath: p, contents: Data("x".utf8))
            var times = [timespec(tv_sec: Int(now - ageSeconds), tv_nsec: 0), timespec(tv_sec: Int(now - ageSeconds), tv_nsec: 0)]
            _ = utimensat(AT_FDCWD, p, &times, 0)
        }
        make("acct-20261101-000000.csv", ageSeconds: 3 * 86_400)
        make("acct-20261103-000000.csv", ageSeconds: 3600)
        make("acct-notes.csv", ageSeconds: 30 * 86_400)
        var o = AccountingFileOptions(path: dir + "/acct.csv")
        o.deleteAfter = 86_400
        let clock = FakeWallClock(now)
        let w = try AccountingWriter(options: o, wallClock: clock.read)
        #expect(listDir(dir) == ["acct-20261103-000000.csv", "acct-notes.csv", "acct.csv"])
        // Two days on, a rotation: the file rotated an hour "ago" is now old too.
        make("acct-20261103-000000.csv", ageSeconds: 2 * 86_400)
        w.append(sampleRecord(.delivered))
        #expect(w.rotate() == nil)
        w.close()
        let rotated = try #require(w.rotatedPaths.first)
        #expect(listDir(dir) == [(rotated as NSString).lastPathComponent, "acct-notes.csv", "acct.csv"].sorted())
    }

    static func script(_ dir: String, _ name: String, _ body: String) -> String {
        let path = dir + "/" + name
        // O_CLOEXEC: a program another test starts meanwhile must not inherit
        // the open file (its exec would then fail with ETXTBSY).
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        let bytes = Array("#!/bin/sh\n\(body)\n".utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        return path
    }

    static func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    /// `<acct-file |program>`: the program gets the header, then the records;
    /// when it exits it is started again and gets the header again.
    @Test func aPipeFeedsTheProgramAndRestartsIt() throws {
        let dir = makeTempDir("acct-pipe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/out.csv", mark = dir + "/started", pidFile = dir + "/first.pid"
        // The first instance takes the header and one record, then exits; later ones take everything.
        let program = Self.script(dir, "loader", """
            if [ -e \(mark) ]; then exec cat >> \(out); fi
            touch \(mark)
            echo $$ > \(pidFile)
            head -n 2 >> \(out)
            """)
        let w = try AccountingWriter(options: AccountingFileOptions(path: "|" + program, flushThreshold: 1),
                                     wallClock: FakeWallClock(t0).read)
        w.append(sampleRecord(.delivered, rcpt: "one@x.test"))
        #expect(Self.waitUntil(10) { readText(out).contains("one@x.test") })
        // The first instance is gone (a zombie until the writer reaps it).
        let pid = Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(Self.waitUntil(10) {
            let stat = readText("/proc/\(pid)/stat")
            return stat.isEmpty || stat.contains(") Z ")
        })
        w.append(sampleRecord(.bounced, rcpt: "two@x.test"))
        #expect(Self.waitUntil(10) { w.flush(); return readText(out).contains("two@x.test") }, "\(readText(out))")
        w.close()
        let lines = readText(out).split(separator: "\r\n").map(String.init)
        #expect(lines.filter { $0.hasPrefix("type,timeLogged") }.count == 2, "\(lines)")
        #expect(lines.filter { $0.hasPrefix("d,") || $0.hasPrefix("b,") }.count == 2, "\(lines)")
    }

    /// A program that never reads: appends never block, the buffer stays
    /// bounded, and the dropped bytes are counted in whole lines.
    @Test func aProgramThatDoesNotReadNeverBlocksTheWriter() throws {
        let dir = makeTempDir("acct-pipe-stuck")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let program = Self.script(dir, "stuck", "exec sleep 600")
        var o = AccountingFileOptions(path: "|" + program, flushThreshold: 1)
        o.maxPipeBuffered = 64 * 1024
        let w = try AccountingWriter(options: o, wallClock: FakeWallClock(t0).read)
        let line = Int64(sampleRecord(.delivered).csvLine.utf8.count)
        // Far more than the pipe (64 KiB) and the buffer (64 KiB) hold together.
        for i in 0..<2000 { w.append(sampleRecord(.delivered, rcpt: "r\(i)@x.test")) }
        #expect(w.droppedBytes > 0)
        #expect(w.currentSize <= 64 * 1024 + line + 4096, "buffer \(w.currentSize)")
        w.close()  // stops the program (SIGTERM after a grace period)
    }

    @Test func vmtaPoolIsTheLastColumn() throws {
        #expect(AccountingRecord.fieldNames.last == "vmtaPool")
        var r = sampleRecord(.delivered)
        r.vmtaPool = "pool1"
        let rows = try AccountingCSVReader.parse(String(decoding: AccountingRecord.csvHeader, as: UTF8.self) + r.csvLine)
        #expect(rows.first?["vmtaPool"] == "pool1")
        #expect(try AccountingRecord(csvRow: rows[0]) == r)
    }
}
