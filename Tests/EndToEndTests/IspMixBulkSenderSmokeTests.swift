import Foundation
import Testing

/// `peregrine-bench isp-mix` with the 2024 bulk-sender rules enforced (issue
/// 15): the sink gets the run's DKIM public key, so Gmail's and Yahoo's
/// profiles verify signatures, DMARC alignment and RFC 8058 one-click
/// unsubscribe. Signed by Peregrine, every message passes (lost 0, no
/// refusal for the rules); with `--no-dkim` the same mix gets Gmail's
/// 550-5.7.26 at end of DATA, so the enforcement is not vacuous. CI-sized:
/// gmail, yahoo and icloud (Yahoo's profile has the rules too; no message
/// reaches its 72 s suspension at this count); nothing about time is asserted.
/// The signed run also has the sink bounce 2% and complain about 1% of what
/// it accepted: every report must come back as an `rb` or `f` record.
/// In IspMixTLSSmokeTests' serialized suite: every isp-mix run needs the
/// profile addresses' port 25, so two must never run at once.
extension IspMixTLSSmokeTests {
    static func runBulkSender(_ extra: [String]) throws -> (status: Int32, doc: [String: Any], log: String) {
        let dir = BenchScenarioSmokeTests.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try BenchScenarioSmokeTests.bench(["isp-mix", "--backend", "epoll", "--count", "200", "--rate", "100/s",
                                                   "--isps", "gmail,yahoo,icloud", "--deadline", "150", "--seed", "5",
                                                   "--output-dir", dir] + extra, timeout: 240)
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("isp-mix-epoll-") },
                                "no result file:\n\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: dir + "/" + file))
        let doc = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (r.status, doc, r.stdout + "\n" + r.stderr)
    }

    @Test func signedMailPassesTheEnforcedRulesAndNothingIsLost() throws {
        // 1% complaints (not the default 0.1%) so 200 messages draw some; 200 stay below the profiles' 1000-message window.
        let r = try Self.runBulkSender(["--bounce-percent", "2", "--complaint-percent", "1"])
        #expect(r.status == 0, "exit \(r.status)\n\(r.log)")
        let rules = try #require(r.doc["bulkSenderRules"] as? [String: Any])
        #expect(rules["enforced"] as? Bool == true, "\(rules)")
        #expect(Set(rules["enforcedBy"] as? [String] ?? []) == ["gmail", "yahoo"], "\(rules)")
        #expect(rules["dkimSigned"] as? Bool == true)
        #expect(rules["refusalsAtSinkTotal"] as? Int == 0, "\(rules)")
        #expect((rules["bouncesByStatus"] as? [String: Int])?["5.7.26"] == nil, "\(rules)")
        #expect(r.doc["lost"] as? Int == 0, "\(r.doc["lostSample"] ?? "")")
        #expect(r.doc["ok"] as? Bool == true, "\(r.doc["failures"] ?? "")")
        // The sink's asynchronous bounces and complaints came back as rb and f records, every one (issue 15).
        let reports = try #require(r.doc["asyncReports"] as? [String: Any])
        let sentBounces = reports["asyncBouncesSent"] as? Int ?? 0, sentComplaints = reports["complaintsSent"] as? Int ?? 0
        #expect(sentBounces > 0 && sentComplaints > 0, "\(reports)")
        #expect(reports["rbRecords"] as? Int == sentBounces && reports["fRecords"] as? Int == sentComplaints, "\(reports)")
        #expect(reports["lost"] as? Int == 0 && reports["match"] as? Bool == true, "\(reports)")
        #expect((r.doc["accountingRecords"] as? [String: Int])?["rb"] == sentBounces, "\(r.doc["accountingRecords"] ?? "")")
        // Gmail and Yahoo took real shares of the signed mail.
        let byProvider = try #require(r.doc["deliveriesByProvider"] as? [String: Any])
        for name in ["gmail", "yahoo"] {
            let p = try #require(byProvider[name] as? [String: Any], "\(byProvider)")
            #expect(p["delivered"] as? Int ?? 0 > 0, "\(name): \(p)")
        }
    }

    @Test func unsignedMailIsRefusedWithGmailsText() throws {
        let r = try Self.runBulkSender(["--no-dkim"])
        let rules = try #require(r.doc["bulkSenderRules"] as? [String: Any])
        #expect(rules["enforced"] as? Bool == true, "\(rules)")
        #expect(rules["dkimSigned"] as? Bool == false)
        let refusals = try #require(rules["refusalsAtSink"] as? [String: Int])
        #expect(refusals["require-dkim"] ?? 0 > 0, "\(rules)")
        // The daemon bounced them with the provider's own words (b records).
        let byStatus = try #require(rules["bouncesByStatus"] as? [String: Int])
        #expect(byStatus["5.7.26"] ?? 0 > 0 && byStatus["5.7.9"] ?? 0 > 0, "\(byStatus)")
        let sample = try #require(rules["bounceDiagnosticSample"] as? [String])
        #expect(sample.contains { $0.contains("5.7.26") && $0.contains("This mail is unauthenticated") }, "\(sample)")
        #expect(sample.contains { $0.contains("5.7.9") && $0.contains("Message not accepted for policy reasons") }, "\(sample)")
        // Refused is not lost: every refused message has its bounce.
        #expect(r.doc["lost"] as? Int == 0, "\(r.doc["lostSample"] ?? "")")
    }
}
