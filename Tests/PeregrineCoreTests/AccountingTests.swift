import Testing
import Glibc
import Foundation
import Synchronization
@testable import PeregrineAccounting

/// A settable wall clock for rotation tests.
final class FakeWallClock: @unchecked Sendable {
    let value: Mutex<Int64>
    init(_ start: Int64) { value = Mutex(start) }
    func set(_ v: Int64) { value.withLock { $0 = v } }
    func advance(_ d: Int64) { value.withLock { $0 += d } }
    var read: @Sendable () -> Int64 { { [self] in value.withLock { $0 } } }
}

func makeTempDir(_ tag: String) -> String {
    var template = Array("/tmp/peregrine-\(tag)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return p.map { String(cString: $0) } ?? "/tmp"
}

func listDir(_ dir: String) -> [String] {
    guard let d = opendir(dir) else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { out.append(name) }
    }
    return out.sorted()
}

func readText(_ path: String) -> String {
    (try? AccountingCSVReader.readBytes(path: path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

// 2026-11-29 08:41:36 UTC
let t0: Int64 = 1_795_941_696

func sampleRecord(_ type: AccountingRecordType, rcpt: String = "user@gmail.com") -> AccountingRecord {
    AccountingRecord(type: type, timeLogged: t0, timeQueued: t0 - 30,
                     orig: "bounces@sender.example", rcpt: rcpt, orcpt: "rfc822;\(rcpt)",
                     dsnAction: "relayed", dsnStatus: "2.0.0 (success)", dsnDiag: "smtp;250 2.0.0 OK",
                     dsnMta: "gmail-smtp-in.l.google.com (142.250.1.26)", bounceCat: "",
                     srcType: "smtp", srcMta: "client.example (127.0.0.1)", dlvType: "smtp",
                     dlvSourceIp: "127.0.0.2", dlvDestinationIp: "127.0.0.10",
                     dlvEsmtpAvailable: "PIPELINING,8BITMIME,SIZE", dlvSize: 4096,
                     vmta: "vmta1", jobId: "job-7", envId: "env-1",
                     timeFirstAttempt: t0 - 20, totalSecondsQueued: 30, queue: "gmail.com/vmta1")
}

@Suite("Accounting CSV")
struct AccountingCSVTests {
    @Test func timestampFormatsLikePowerMTA() {
        #expect(AccountingTimestamp.format(t0) == "2026-11-29 08:41:36+0000")
        #expect(AccountingTimestamp.format(0) == "1970-01-01 00:00:00+0000")
        #expect(AccountingTimestamp.format(951_782_400) == "2000-02-29 00:00:00+0000")
        #expect(AccountingTimestamp.parse("2026-11-29 08:41:36+0000") == t0)
        #expect(AccountingTimestamp.parse("2026-11-29 09:41:36+0100") == t0)
        #expect(AccountingTimestamp.parse("2026-13-29 08:41:36+0000") == nil)
        #expect(AccountingTimestamp.parse("garbage") == nil)
        for s: Int64 in [0, 59, 86_399, 951_782_400, t0, 4_102_444_800] {
            #expect(AccountingTimestamp.parse(AccountingTimestamp.format(s)) == s)
        }
        #expect(AccountingTimestamp.compact(t0) == "20261129-084136")
    }

    @Test func headerNamesEveryFieldInOrder() {
        let header = String(decoding: AccountingRecord.csvHeader, as: UTF8.self)
        #expect(header.hasPrefix("type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,timeFirstAttempt,totalSecondsQueued,queue"))
        #expect(header.hasSuffix("\r\n"))
        #expect(header.split(separator: ",").count == AccountingRecord.fieldNames.count)
    }

    @Test func deliveredLine() {
        let line = sampleRecord(.delivered).csvLine
        #expect(line == "d,2026-11-29 08:41:36+0000,2026-11-29 08:41:06+0000,bounces@sender.example,user@gmail.com,rfc822;user@gmail.com,relayed,2.0.0 (success),smtp;250 2.0.0 OK,gmail-smtp-in.l.google.com (142.250.1.26),,smtp,client.example (127.0.0.1),smtp,127.0.0.2,127.0.0.10,PIPELINING,8BITMIME,SIZE,4096,vmta1,job-7,env-1,2026-11-29 08:41:16+0000,30,gmail.com/vmta1,,,,\r\n"
                .replacingOccurrences(of: "PIPELINING,8BITMIME,SIZE", with: "\"PIPELINING,8BITMIME,SIZE\""))
    }

    @Test(arguments: [
        ("plain", "plain"),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("two\r\nlines", "\"two\r\nlines\""),
        ("lf\nonly", "\"lf\nonly\""),
        ("cr\ronly", "\"cr\ronly\""),
        ("", ""),
        (" padded ", "\" padded \""),
        ("ünïcødé", "ünïcødé"),
    ])
    func fieldEscaping(_ input: String, _ expected: String) throws {
        var out: [UInt8] = []
        AccountingCSV.appendField(input, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == expected)
        // And it reads back as the same value.
        var row: [UInt8] = Array("type,x\r\nd,".utf8)
        row += out
        row += Array("\r\n".utf8)
        let rows = try AccountingCSVReader.parse(row)
        #expect(rows.count == 1)
        #expect(rows.first?["x"] == input)
    }

    @Test(arguments: AccountingRecordType.allCases)
    func everyRecordTypeRoundTrips(_ type: AccountingRecordType) throws {
        var r = sampleRecord(type)
        switch type {
        case .bounced:
            r.dsnAction = "failed"; r.dsnStatus = AccountingRecord.dsnStatus(enhancedCode: "5.1.1", replyCode: 550)
            r.dsnDiag = AccountingRecord.dsnDiag(smtpReply: "550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please try again, \"quoted\"")
            r.bounceCat = "bad-mailbox"
        case .transient, .transientQueue:
            r.dsnAction = "delayed"; r.dsnStatus = AccountingRecord.dsnStatus(enhancedCode: "4.7.28", replyCode: 421)
            r.dsnDiag = "smtp;421 4.7.28 rate limited"
            if type == .transientQueue { r.rcpt = ""; r.orcpt = "" }
        case .received:
            r.dsnAction = ""; r.dsnStatus = ""; r.dsnDiag = ""; r.dlvSize = nil; r.timeFirstAttempt = nil
        default: break
        }
        var bytes = AccountingRecord.csvHeader
        r.appendCSV(to: &bytes)
        let rows = try AccountingCSVReader.parse(bytes)
        #expect(rows.count == 1)
        let back = try #require(rows.first).record()
        #expect(back == r)
        #expect(rows.first?["type"] == type.rawValue)
    }

    @Test func dsnHelpers() {
        #expect(AccountingRecord.dsnStatus(enhancedCode: "2.0.0", replyCode: 250) == "2.0.0 (success)")
        #expect(AccountingRecord.dsnStatus(enhancedCode: nil, replyCode: 550) == "5.0.0 (undefined status)")
        #expect(AccountingRecord.dsnStatus(enhancedCode: "5.1.1", replyCode: 550) == "5.1.1 (bad destination mailbox address)")
        #expect(AccountingRecord.dsnStatus(enhancedCode: "4.2.2", replyCode: 452) == "4.2.2 (mailbox full)")
        #expect(AccountingRecord.dsnDiag(smtpReply: "250 2.0.0 OK") == "smtp;250 2.0.0 OK")
        #expect(AccountingRecord.dsnDiag(smtpReply: "421-4.7.0 Try\r\n421 4.7.0 later\r\n") == "smtp;421-4.7.0 Try 421 4.7.0 later")
    }

    @Test func readerRejectsMalformedCSV() {
        #expect(throws: AccountingError.self) { try AccountingCSVReader.parse("type,x\r\nd,\"open") }
        #expect(throws: AccountingError.self) { try AccountingCSVReader.parse("type,x\r\nd,\"a\"b\r\n") }
        #expect(throws: AccountingError.self) { try AccountingCSVReader.parse("type,x\r\nd,a\"b\r\n") }
        #expect(throws: AccountingError.self) { try AccountingCSVReader.parse("nottype,x\r\n") }
        #expect(throws: AccountingError.self) {
            try AccountingCSVReader.parse("type,timeLogged\r\nd,yesterday\r\n").first?.record()
        }
    }

    @Test func readerAcceptsLFAndTracksLines() throws {
        let rows = try AccountingCSVReader.parse("type,a\nd,\"x\ny\"\nb,z\n")
        #expect(rows.map(\.line) == [2, 4])
        #expect(rows[0]["a"] == "x\ny")
        #expect(rows[1]["type"] == "b")
    }
}

@Suite("Accounting writer")
struct AccountingWriterTests {
    @Test func writesHeaderOnceAndFiltersTypes() throws {
        let dir = makeTempDir("acct")
        let path = dir + "/acct.csv"
        let clock = FakeWallClock(t0)
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, records: [.delivered, .bounced]),
                                     wallClock: clock.read)
        for t in AccountingRecordType.allCases { w.append(sampleRecord(t)) }
        #expect(w.flush() == nil)
        w.close()
        var recs = try AccountingCSVReader.readRecords(path: path)
        #expect(recs.map(\.type) == [.delivered, .bounced])

        // Reopening appends without a second header.
        let w2 = try AccountingWriter(options: AccountingFileOptions(path: path), wallClock: clock.read)
        w2.append(sampleRecord(.transient))
        w2.close()
        recs = try AccountingCSVReader.readRecords(path: path)
        #expect(recs.map(\.type) == [.delivered, .bounced, .transient])
        #expect(readText(path).components(separatedBy: "type,timeLogged").count == 2)
    }

    @Test func nothingReachesDiskBeforeFlushUnlessThresholdPassed() throws {
        let dir = makeTempDir("acct")
        let path = dir + "/a.csv"
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, flushThreshold: 1 << 20))
        w.append(sampleRecord(.delivered))
        #expect(try AccountingCSVReader.read(path: path).isEmpty)
        w.flush()
        #expect(try AccountingCSVReader.read(path: path).count == 1)

        let small = try AccountingWriter(options: AccountingFileOptions(path: dir + "/b.csv", flushThreshold: 1))
        small.append(sampleRecord(.delivered))
        #expect(try AccountingCSVReader.read(path: dir + "/b.csv").count == 1)
    }

    @Test func rotatesBySize() throws {
        let dir = makeTempDir("acct")
        let path = dir + "/acct.csv"
        let clock = FakeWallClock(t0)
        let lineSize = Int64(sampleRecord(.delivered).csvLine.utf8.count)
        let header = Int64(AccountingRecord.csvHeader.count)
        let maxSize = header + 3 * lineSize   // three records per file
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, maxSize: maxSize), wallClock: clock.read)
        for i in 0..<10 {
            clock.advance(1)
            w.append(sampleRecord(.delivered, rcpt: "u\(i)@gmail.com"))
        }
        w.close()
        let files = listDir(dir)
        #expect(files.count == 4)
        #expect(w.rotatedPaths.count == 3)
        var all: [String] = []
        for f in files.sorted(by: { a, b in (a == "acct.csv" ? 1 : 0, a) < (b == "acct.csv" ? 1 : 0, b) }) {
            let p = dir + "/" + f
            var st = stat()
            stat(p, &st)
            #expect(Int64(st.st_size) <= maxSize)
            let recs = try AccountingCSVReader.readRecords(path: p)
            #expect(!recs.isEmpty)
            all += recs.map(\.rcpt)
        }
        #expect(all == (0..<10).map { "u\($0)@gmail.com" })
        #expect(files.contains("acct-20261129-084140.csv"))
    }

    @Test func rotatesByIntervalOnTheBoundary() throws {
        let dir = makeTempDir("acct")
        let path = dir + "/acct.csv"
        let hourStart = t0 - t0 % 3600          // 08:00:00
        let clock = FakeWallClock(hourStart + 10)
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, moveInterval: 3600), wallClock: clock.read)
        w.append(sampleRecord(.delivered, rcpt: "a@x"))
        clock.set(hourStart + 3599)
        w.flush()
        #expect(listDir(dir) == ["acct.csv"])
        clock.set(hourStart + 3600)              // 09:00:00: due
        w.flush()
        #expect(listDir(dir) == ["acct-20261129-090000.csv", "acct.csv"])
        // Whole intervals with nothing logged: the empty file is kept, not rotated.
        clock.set(hourStart + 3 * 3600 + 5)
        w.flush()
        #expect(listDir(dir).count == 2)
        clock.set(hourStart + 3 * 3600 + 1800)
        w.append(sampleRecord(.delivered, rcpt: "b@x"))
        clock.set(hourStart + 4 * 3600)
        w.append(sampleRecord(.delivered, rcpt: "c@x"))   // rotation checked on append too
        w.close()
        #expect(listDir(dir) == ["acct-20261129-090000.csv", "acct-20261129-120000.csv", "acct.csv"])
        #expect(try AccountingCSVReader.readRecords(path: dir + "/acct-20261129-090000.csv").map(\.rcpt) == ["a@x"])
        #expect(try AccountingCSVReader.readRecords(path: dir + "/acct-20261129-120000.csv").map(\.rcpt) == ["b@x"])
        #expect(try AccountingCSVReader.readRecords(path: path).map(\.rcpt) == ["c@x"])
    }

    @Test func rotationNameClashGetsACounter() throws {
        let dir = makeTempDir("acct")
        let path = dir + "/acct"
        let clock = FakeWallClock(t0)
        let w = try AccountingWriter(options: AccountingFileOptions(path: path), wallClock: clock.read)
        w.append(sampleRecord(.delivered)); w.rotate()
        w.append(sampleRecord(.delivered)); w.rotate()
        w.close()
        #expect(listDir(dir) == ["acct", "acct-20261129-084136", "acct-20261129-084136-1"])
    }

    @Test func fanOutWritesEachMatchingFile() throws {
        let dir = makeTempDir("acct")
        let all = try AccountingWriter(options: AccountingFileOptions(path: dir + "/all.csv"))
        let bounces = try AccountingWriter(options: AccountingFileOptions(path: dir + "/b.csv", records: [.bounced]))
        let log = AccountingLog(writers: [all, bounces])
        log.log(sampleRecord(.received)); log.log(sampleRecord(.bounced)); log.log(sampleRecord(.delivered))
        #expect(log.close().isEmpty)
        #expect(try AccountingCSVReader.readRecords(path: dir + "/all.csv").map(\.type) == [.received, .bounced, .delivered])
        #expect(try AccountingCSVReader.readRecords(path: dir + "/b.csv").map(\.type) == [.bounced])
    }

    @Test func openFailureIsAValueWithThePath() {
        #expect(throws: AccountingError.self) {
            try AccountingWriter(options: AccountingFileOptions(path: "/nonexistent-dir/x/acct.csv"))
        }
        do {
            _ = try AccountingWriter(options: AccountingFileOptions(path: "/nonexistent-dir/x/acct.csv"))
        } catch {
            #expect(error.description.contains("/nonexistent-dir/x/acct.csv"))
        }
    }
}
