import PeregrineHTTP
import PeregrineRedis

/// `ctl show cluster` (GET /cluster) and the `peregrine_cluster_*` metrics:
/// this node's view of the cluster. Both run on worker 0's loop, where the
/// coordinator lives.
extension Daemon {
    func clusterJSON() -> [String: Any] {
        guard let c = cluster else { return ["enabled": false] }
        let s = c.status
        let sites: [[String: Any]] = c.siteNames.sorted().map { name in
            ["site": name, "leases": c.held(site: name), "tokensGranted": c.tokensGranted(site: name)]
        }
        return ["enabled": true, "node": s.node, "nodeCount": s.nodeCount, "mode": s.mode, "redis": s.redis,
                "connected": s.connected, "lastError": s.lastError ?? "", "nodesSeen": s.nodesSeen,
                "latencyMicroseconds": Int(s.lastLatencyMicroseconds), "roundTrips": s.roundTrips,
                "rateRoundTrips": s.rateRoundTrips, "leaseRequests": s.leaseRequests, "sites": sites,
                "suppressionPublished": c.suppressionSync?.published ?? 0, "suppressionApplied": c.suppressionSync?.applied ?? 0]
    }

    func clusterMetrics(into p: inout PrometheusText) {
        guard let c = cluster else { return }
        let s = c.status
        p.gauge("peregrine_cluster_shared", help: "1 while cluster limits are shared through Redis, 0 in fallback (each node keeps to 1/N)",
                value: s.mode == "shared" ? 1 : 0)
        p.gauge("peregrine_cluster_redis_latency_seconds", help: "Latency of the last answered Redis round trip",
                value: Double(s.lastLatencyMicroseconds) / 1_000_000)
        p.counter("peregrine_cluster_redis_round_trips_total", help: "Redis script calls made by this node", value: s.roundTrips)
        p.counter("peregrine_cluster_rate_round_trips_total", help: "Of those, message-rate token refills", value: s.rateRoundTrips)
        p.gauge("peregrine_cluster_nodes_seen", help: "Nodes holding live connection leases on one site, at most", value: s.nodesSeen)
        for name in c.siteNames.sorted() {
            p.gauge("peregrine_cluster_leases", help: "Connection leases this node holds, per site", value: c.held(site: name),
                    labels: [("site", name)])
            p.counter("peregrine_cluster_message_tokens_total", help: "Message-rate tokens granted to this node, per site",
                      value: c.tokensGranted(site: name), labels: [("site", name)])
        }
    }
}
