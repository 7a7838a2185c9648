import Foundation
import Testing

/// `peregrine-bench isp-mix --mx-fault gmail:1=blackhole`: Gmail's primary MX
/// (preference 10, the one an MTA tries first) accepts TCP and never greets
/// for the whole run, as CI scripts a provider's host dying. The daemon still
/// delivers every message through the second host (lost 0), the sink counts the black-holed sessions, and the queue
/// accounting has the `tq` records of the failed host. CI-sized mix (gmail,
/// icloud); nothing about time is asserted. In IspMixTLSSmokeTests'
/// serialized suite: isp-mix runs must not overlap (port 25).
extension IspMixTLSSmokeTests {
    @Test func gmailsPrimaryMXBlackHoledLosesNothing() throws {
        let dir = BenchScenarioSmokeTests.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try BenchScenarioSmokeTests.bench(["isp-mix", "--backend", "epoll", "--count", "200", "--rate", "100/s",
                                                   "--isps", "gmail,icloud", "--deadline", "150", "--seed", "5",
                                                   "--mx-fault", "gmail:1=blackhole", "--output-dir", dir], timeout: 240)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stdout)\n\(r.stderr)")
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("isp-mix-epoll-") },
                                "no result file:\n\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: dir + "/" + file))
        let doc = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(doc["lost"] as? Int == 0, "\(doc["lostSample"] ?? "")")
        #expect(doc["ok"] as? Bool == true, "\(doc["failures"] ?? "")")
        let config = try #require(doc["config"] as? [String: Any])
        #expect(config["mxFaults"] as? [String] == ["gmail:1=blackhole"])
        let providers = try #require(doc["sinkProviders"] as? [String: Any])
        let gmail = try #require(providers["gmail"] as? [String: Any])
        #expect(gmail["sessions_blackholed"] as? Int ?? 0 > 0, "the daemon never met the black-holed host: \(gmail)")
        #expect(gmail["messages_accepted"] as? Int ?? 0 > 0)
        let records = try #require(doc["accountingRecords"] as? [String: Int])
        #expect(records["tq"] ?? 0 > 0, "no tq record for the black-holed host: \(records)")
    }
}
