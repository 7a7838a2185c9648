import Testing
import Glibc
import Foundation
@testable import PeregrineAccounting

/// `AccountingWriter.sync()` (what an inbound report's 250 waits for) and
/// `AccountingLog.sync(_:)`: the buffered records reach the file, only the
/// files that take the asked types are synced, and a pipe file has nothing
/// to sync.
@Suite("Accounting sync")
struct AccountingSyncTests {
    @Test func syncWritesWhatIsBufferedWithoutWaitingForTheFlush() throws {
        let dir = makeTempDir("acct-sync")
        let path = dir + "/reports.csv"
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, flushThreshold: 1 << 20))
        w.append(sampleRecord(.remoteBounce, rcpt: "gone@remote.test"))
        #expect(try AccountingCSVReader.read(path: path).isEmpty, "buffered until a flush")
        #expect(w.sync() == nil)
        #expect(try AccountingCSVReader.read(path: path).map { $0["rcpt"] } == ["gone@remote.test"])
        // A second sync with nothing new is a no-op that still succeeds.
        #expect(w.sync() == nil)
    }

    @Test func logSyncsOnlyTheFilesTakingTheTypes() throws {
        let dir = makeTempDir("acct-sync")
        let reports = try AccountingWriter(options: AccountingFileOptions(path: dir + "/rb.csv", records: [.remoteBounce, .feedbackLoop],
                                                                          flushThreshold: 1 << 20))
        let deliveries = try AccountingWriter(options: AccountingFileOptions(path: dir + "/d.csv", records: [.delivered],
                                                                             flushThreshold: 1 << 20))
        let log = AccountingLog(writers: [reports, deliveries])
        log.log(sampleRecord(.remoteBounce))
        log.log(sampleRecord(.delivered))
        #expect(log.sync([.remoteBounce]).isEmpty)
        #expect(try AccountingCSVReader.read(path: dir + "/rb.csv").count == 1)
        #expect(try AccountingCSVReader.read(path: dir + "/d.csv").isEmpty, "not asked for: left to the periodic flush")
    }
}
