import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineAccounting

/// isp-mix's asynchronous bounces and complaints (issue 15): the sink sends
/// them to Peregrine's listener, addressed to the processors' addresses
/// below; Peregrine reads them into `rb` and `f` records. The bench matches,
/// per provider, what the sink says it sent against those records.
struct IspMixAsyncReports {
    static let bounceAddress = "bounces@reports.peregrine.test"
    static let complaintAddress = "fbl@reports.peregrine.test"

    let bouncePercent: Double
    let complaintPercent: Double

    init(bouncePercent: Double, complaintPercent: Double) throws {
        guard bouncePercent <= 100, complaintPercent <= 100 else {
            throw BenchUsageError("--bounce-percent and --complaint-percent take 0-100")
        }
        self.bouncePercent = bouncePercent
        self.complaintPercent = complaintPercent
    }

    var enabled: Bool { bouncePercent > 0 || complaintPercent > 0 }

    func sinkArguments(via: String) -> [String] {
        guard enabled else { return [] }
        return ["--reports-via", via, "--bounce-percent", "\(bouncePercent)", "--bounce-to", Self.bounceAddress,
                "--complaint-percent", "\(complaintPercent)", "--complaint-to", Self.complaintAddress]
    }

    /// The daemon's processors (PowerMTA's blocks): each reads its address's mail instead of relaying it.
    var configLines: String {
        guard enabled else { return "" }
        func regex(_ a: String) -> String { "^" + a.replacingOccurrences(of: ".", with: "\\.") + "$" }
        return """
            # The sink's asynchronous bounces and ARF complaints: read into rb and f records, never relayed.
            <bounce-processor>
                <address-list>
                    address /\(regex(Self.bounceAddress))/
                </address-list>
            </bounce-processor>
            <feedback-loop-processor>
                <address-list>
                    address /\(regex(Self.complaintAddress))/
                </address-list>
            </feedback-loop-processor>
            """
    }

    /// Polls the sink until its report queue is empty and nothing is in flight.
    func waitForSink(ip: String, statsPort: UInt16, deadline: Date) -> Bool {
        guard enabled else { return true }
        while Date() < deadline {
            if let r = BenchNet.getJSON(ip: ip, port: statsPort, path: "/stats")?["async_reports"] as? [String: Any],
               r["queued"] as? Int == 0, r["in_flight"] as? Int == 0 {
                return true
            }
            usleep(100_000)
        }
        return false
    }

    struct Tally {
        var json: [String: Any] = [:]
        var failures: [String] = []
        var lines: [String] = []
        var bounceRatio = "-"
        var complaintRatio = "-"
    }

    /// Per provider: async bounces the sink sent vs `rb` records for that
    /// provider's recipients, complaints sent vs `f` records. The daemon must
    /// be stopped first (its accounting file flushed).
    func reconcile(sinkStats: [String: Any], acct: String, providers: [IspMixProvider]) -> Tally {
        var t = Tally()
        guard enabled else { t.json = ["enabled": false]; return t }
        let stats = sinkStats["async_reports"] as? [String: Any] ?? [:]
        let sentBy = stats["providers"] as? [String: Any] ?? [:]
        var providerOf: [String: String] = [:]
        for p in IspMixProvider.all { for d in p.domains { providerOf[d] = p.name } }
        var rb: [String: Int] = [:], f: [String: Int] = [:]
        let rows = (try? AccountingCSVReader.read(path: acct)) ?? []
        for row in rows {
            let type = row["type"] ?? ""
            guard type == "rb" || type == "f" else { continue }
            let domain = (row["rcpt"] ?? "").split(separator: "@").last.map { $0.lowercased() } ?? ""
            let name = providerOf[domain] ?? "unknown(\(domain))"
            if type == "rb" { rb[name, default: 0] += 1 } else { f[name, default: 0] += 1 }
        }
        var perProvider: [String: Any] = [:]
        var totals = (bounces: 0, rb: 0, complaints: 0, f: 0, failed: 0)
        let names = Set(providers.map(\.name)).union(rb.keys).union(f.keys).union(sentBy.keys)
        for name in names.sorted() {
            let s = sentBy[name] as? [String: Any] ?? [:]
            let bounces = s["bounces_sent"] as? Int ?? 0, complaints = s["complaints_sent"] as? Int ?? 0
            let failed = s["failed"] as? Int ?? 0
            let nrb = rb[name] ?? 0, nf = f[name] ?? 0
            perProvider[name] = ["asyncBouncesSent": bounces, "rbRecords": nrb, "complaintsSent": complaints, "fRecords": nf,
                                 "sendFailed": failed]
            totals.bounces += bounces; totals.rb += nrb; totals.complaints += complaints; totals.f += nf; totals.failed += failed
            if nrb != bounces { t.failures.append("\(name):rb=\(nrb)/sent=\(bounces)") }
            if nf != complaints { t.failures.append("\(name):f=\(nf)/sent=\(complaints)") }
            t.lines.append("async reports \(name): bounces sent \(bounces), rb \(nrb); complaints sent \(complaints), f \(nf)"
                           + (failed > 0 ? "; \(failed) not sent" : ""))
        }
        // A report the sink could not hand over is lost on the way to the daemon.
        if totals.failed > 0 { t.failures.append("reports-not-sent=\(totals.failed) (\(stats["last_error"] ?? "?"))") }
        t.bounceRatio = "\(totals.rb)/\(totals.bounces)"
        t.complaintRatio = "\(totals.f)/\(totals.complaints)"
        t.json = ["enabled": true, "bouncePercent": bouncePercent, "complaintPercent": complaintPercent,
                  "bounceTo": Self.bounceAddress, "complaintTo": Self.complaintAddress,
                  "asyncBouncesSent": totals.bounces, "rbRecords": totals.rb,
                  "complaintsSent": totals.complaints, "fRecords": totals.f, "sendFailed": totals.failed,
                  "lost": max(0, totals.bounces - totals.rb) + max(0, totals.complaints - totals.f) + totals.failed,
                  "byProvider": perProvider, "match": t.failures.isEmpty]
        return t
    }
}
