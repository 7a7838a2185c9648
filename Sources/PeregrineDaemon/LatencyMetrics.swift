import PeregrineEngine
import PeregrineHTTP
import PeregrineIO
import PeregrineSpool

/// The latency histograms of issue 17 besides delivery latency: SMTP
/// transaction time per provider, DKIM signing time, spool fsync time. Each
/// loop keeps its own; a scrape merges them (Daemon+Management's `gather`).
enum LatencyMetrics {
    /// A local receiver answers in milliseconds, a tarpitting provider in minutes.
    static let transactionBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
    /// RSA-2048 signs in about a millisecond, Ed25519 in tens of microseconds.
    static let dkimSigningBounds: [Double] = [0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                              0.025, 0.05, 0.1]
    /// Providers (queue domains) with a series of their own, per loop; the rest
    /// share provider="other", so hundreds of thousands of domains stay bounded.
    static let providerLimit = 100
}

/// SMTP transaction time by provider (the queue's domain), capped at
/// `LatencyMetrics.providerLimit` providers.
struct TransactionTimes {
    private(set) var byProvider: [String: PrometheusHistogram] = [:]

    mutating func observe(domain: String, seconds: Double) {
        let key = byProvider[domain] != nil || byProvider.count < LatencyMetrics.providerLimit ? domain : "other"
        byProvider[key, default: PrometheusHistogram(bounds: LatencyMetrics.transactionBounds)].observe(seconds: seconds)
    }

    mutating func merge(_ other: TransactionTimes) {
        for (provider, h) in other.byProvider {
            let key = byProvider[provider] != nil || byProvider.count < LatencyMetrics.providerLimit ? provider : "other"
            byProvider[key, default: PrometheusHistogram(bounds: LatencyMetrics.transactionBounds)].merge(h)
        }
    }
}

extension LoopWorker {
    public func transactionCompleted(_ queue: DeliveryQueue, nanoseconds: UInt64) {
        transactionTimes.observe(domain: queue.key.domain, seconds: Double(nanoseconds) / 1e9)
    }
}

extension Daemon {
    /// The three histogram families, each contiguous (one family per name).
    func latencyMetrics(_ snaps: [WorkerSnapshot], into p: inout PrometheusText) {
        var transactions = TransactionTimes()
        for s in snaps { transactions.merge(s.transactionTimes) }
        var first = true
        for (provider, h) in transactions.byProvider.sorted(by: { $0.key < $1.key }) {
            p.histogram("peregrine_smtp_transaction_duration_seconds",
                        help: first ? "Outbound SMTP transactions, MAIL FROM to the final reply, by provider (the queue's domain; at most \(LatencyMetrics.providerLimit) per loop, the rest as other)" : nil,
                        h, labels: [("provider", provider)])
            first = false
        }
        var dkim = PrometheusHistogram(bounds: LatencyMetrics.dkimSigningBounds)
        for s in snaps { dkim.merge(s.dkimSigning) }
        p.histogram("peregrine_dkim_signing_duration_seconds", help: "DKIM signing of an injected message (all its signatures)", dkim)
        first = true
        for sp in snaps.flatMap(\.spools).sorted(by: { $0.stream < $1.stream }) {
            let f = sp.fsyncLatency
            p.histogram("peregrine_spool_fsync_duration_seconds",
                        help: first ? "fdatasync of spool segments, from issue to completion" : nil,
                        buckets: zip(SpoolLatency.bounds, f.counts).map { (upperBound: $0, count: $1) },
                        overflow: f.counts.last ?? 0, sum: f.sumSeconds, labels: [("stream", String(sp.stream))])
            first = false
        }
    }
}
