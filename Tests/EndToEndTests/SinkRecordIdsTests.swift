import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// `--record-ids`: an accepted message's id is in the file while the sink
/// still runs (it used to stay in a 64 KB buffer until the sink stopped).
@Suite(.timeLimit(.minutes(10)), .blockingIO)
struct SinkRecordIdsTests {
    @Test func idsReachTheFileWhileTheSinkRuns() throws {
        let dir = try TestDirectory("record-ids")
        let ip = PrivateLoopback.address(195, 1)
        let idsPath = dir.file("ids.txt")
        let sink = try startSink(dir, serviceIP: ip, sinkProfile("plain", domains: "plain.test", mx: [ip]), ids: idsPath)
        defer { _ = sink.terminate() }
        let (host, port) = try sink.address("plain")
        let c = try SinkTestClient(host, port)
        #expect(try c.start()?.code == 220)
        for i in 1...3 {
            #expect(try c.sendMessage(to: "r\(i)@plain.test", id: "rid-\(i)") == nil)
        }
        _ = try? c.command("QUIT")
        // Waiting on the file itself: the sink keeps running throughout.
        let seen = E2E.waitUntil(10, every: 0.1) { recordedIds(idsPath).count >= 3 }
        #expect(seen, "ids file after 10 s: '\((try? String(contentsOfFile: idsPath, encoding: .utf8)) ?? "")'")
        #expect(Set(recordedIds(idsPath).map(\.id)) == ["rid-1", "rid-2", "rid-3"])
        #expect(sink.process.isRunning)
    }
}
