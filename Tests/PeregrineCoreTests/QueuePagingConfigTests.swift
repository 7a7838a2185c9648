import Testing
import PeregrineConfig
@testable import PeregrineDaemon

/// `max-queued-in-memory N|unlimited` (issue #18): parsed, and bad values
/// refused with the file and line.
@Suite struct QueuePagingConfigTests {
    @Test func limitIsParsedAndBadValuesAreRefused() throws {
        #expect(try PeregrineConfig.parse("spool /tmp/x\n", file: "p.conf").maxQueuedInMemory == nil)
        #expect(try PeregrineConfig.parse("max-queued-in-memory 250000\n", file: "p.conf").maxQueuedInMemory == 250_000)
        #expect(try PeregrineConfig.parse("max-queued-in-memory Unlimited\n", file: "p.conf").maxQueuedInMemory == nil)
        for bad in ["max-queued-in-memory 0", "max-queued-in-memory -3", "max-queued-in-memory lots",
                    "max-queued-in-memory", "max-queued-in-memory 5 6"] {
            do {
                _ = try PeregrineConfig.parse("host-name a.test\n" + bad + "\n", file: "p.conf")
                Issue.record("accepted: \(bad)")
            } catch {
                #expect(error.description.hasPrefix("p.conf:2"), "\(bad): \(error)")
                #expect(error.description.contains("max-queued-in-memory"), "\(bad): \(error)")
            }
        }
    }

    @Test func roomFollowsTheLimit() {
        let p = QueuePaging()
        #expect(!p.isLimited && p.hasRoom(for: 1_000_000) && p.room == 0)
        p.setLimit(5)
        #expect(p.isLimited && p.room == 5)
        p.dispatched(4)
        #expect(p.hasRoom(for: 1) && !p.hasRoom(for: 2) && p.room == 1)
        p.startArriving(1)
        #expect(!p.hasRoom(for: 1) && p.room == 0)
        p.stopArriving(1)
        p.finished(4)
        // Nothing held: even a message larger than the limit moves.
        #expect(p.hasRoom(for: 50))
        p.setLimit(nil)
        #expect(!p.isLimited)
    }
}
