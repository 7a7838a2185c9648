import Foundation
import Testing

/// A CI-sized `peregrine-bench isp-mix` with TLS on (issue 8): the sink serves
/// Gmail's require-tls with a throwaway certificate, the daemon delivers with
/// opportunistic STARTTLS. Yahoo (72 s suspension) and Outlook (54 s backoff)
/// are left out of the mix so the run stays short; nothing about time is asserted.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct IspMixTLSSmokeTests {
    @Test func gmailGetsEverythingOverTLSAndNothingIsLost() throws {
        let dir = BenchScenarioSmokeTests.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try BenchScenarioSmokeTests.bench(["isp-mix", "--backend", "epoll", "--count", "200", "--rate", "100/s",
                                                   "--isps", "gmail,icloud,comcast", "--deadline", "90", "--seed", "5",
                                                   "--output-dir", dir], timeout: 150)
        #expect(r.status == 0, "exit \(r.status)\n\(r.stdout)\n\(r.stderr)")
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("isp-mix-epoll-") },
                                "no result file:\n\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: dir + "/" + file))
        let doc = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(doc["tls"] as? Bool == true)
        #expect(doc["lost"] as? Int == 0, "\(doc["lostSample"] ?? "")\n\(r.stderr)")
        #expect(doc["ok"] as? Bool == true, "\(doc["failures"] ?? "")")
        let injected = try #require(doc["injected"] as? Int)
        #expect(injected > 0)
        #expect((doc["delivered"] as? Int ?? 0) + (doc["bounced"] as? Int ?? 0) == injected)
        // Every Gmail delivery (d record) named a TLS protocol; Gmail got a real share of the mix.
        let gmail = try #require(doc["gmailDelivered"] as? Int)
        #expect(gmail > 0)
        #expect(doc["gmailDeliveredOverTLS"] as? Int == gmail)
        let byProvider = try #require(doc["deliveriesByProvider"] as? [String: Any])
        let gmailCounts = try #require(byProvider["gmail"] as? [String: Any])
        #expect(gmailCounts["plain"] as? Int == 0)
        let protocols = try #require(gmailCounts["protocols"] as? [String: Int])
        #expect(!protocols.isEmpty && protocols.keys.allSatisfy { $0 == "TLSv1.3" || $0 == "TLSv1.2" }, "\(protocols)")
        #expect(protocols.values.reduce(0, +) == gmail)
        // The sink saw the STARTTLS sessions too, and no handshake failed.
        #expect(doc["sinkSessionsTLS"] as? Int ?? 0 > 0)
        #expect(doc["sinkTLSHandshakeFailures"] as? Int == 0)
        // Only the chosen providers were addressed.
        #expect(Set(byProvider.keys).isSubset(of: ["gmail", "icloud", "comcast"]), "\(byProvider.keys)")
        #expect(r.stdout.contains("gmail TLS") && r.stdout.contains("\(gmail)/\(gmail)"), "\(r.stdout)")
    }
}
