#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// `/metrics` of a running daemon read by Prometheus's own tools (issue 17):
/// `promtool check metrics` finds nothing to say, and Python's
/// prometheus_client parser reads it into exactly the intended families,
/// each once (samples of a family scattered through the text come out as
/// several families of one name), with values that agree with `/status`.
/// Scenario 217: 127.P.217.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonMetricsTests {
    /// Families as prometheus_client parses them, one JSON object per family in text order.
    static let parseScript = #"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
out = []
for f in text_string_to_metric_families(text):
    out.append({"name": f.name, "type": f.type, "unit": f.unit,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"""#

    static let expectedFamilies: [String: String] = [
        "peregrine_received": "counter", "peregrine_delivered": "counter", "peregrine_bounced": "counter",
        "peregrine_deferrals": "counter", "peregrine_queue_deferrals": "counter", "peregrine_uptime_seconds": "gauge",
        "peregrine_queued_on_disk_messages": "gauge", "peregrine_paged_in": "counter",
        "peregrine_bodies_sent_from_file": "counter",
        "peregrine_delivery_latency_seconds": "histogram", "peregrine_connections": "gauge",
        "peregrine_inbound_connections": "counter", "peregrine_inbound_refusals": "counter", "peregrine_accept_failures": "counter",
        "peregrine_spool_healthy": "gauge", "peregrine_spool_pending_outcomes": "gauge", "peregrine_spool_faults": "counter",
        "peregrine_spool_outcomes_dropped": "counter", "peregrine_spool_written_bytes": "counter",
        "peregrine_spool_fsyncs": "counter", "peregrine_spool_segments_created": "counter",
        "peregrine_spool_segments_deleted": "counter", "peregrine_queues": "gauge", "peregrine_recipients_ready": "gauge",
        "peregrine_recipients_delayed": "gauge", "peregrine_vmta_connections": "gauge", "peregrine_queue_ready": "gauge",
        "peregrine_queue_delayed": "gauge", "peregrine_queue_connections": "gauge", "peregrine_queue_backoff": "gauge",
        "peregrine_queue_paused": "gauge", "peregrine_queue_oldest_ready_age_seconds": "gauge",
        "process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge", "process_virtual_memory_bytes": "gauge",
        "process_start_time_seconds": "gauge", "process_open_fds": "gauge", "process_max_fds": "gauge",
        "peregrine_smtp_transaction_duration_seconds": "histogram", "peregrine_dkim_signing_duration_seconds": "histogram",
        "peregrine_spool_fsync_duration_seconds": "histogram",
    ]

    struct Family { var name: String; var type: String; var samples: [[String: Any]] }

    static func parse(_ text: String) throws -> [Family] {
        // The python3 first on PATH: scripts/setup installs prometheus-client with pip into it
        // (pyenv's), which need not be the system's /usr/bin/python3 that findTool prefers.
        let (status, out) = runTool("/usr/bin/env", ["python3", "-c", parseScript], stdin: text, seconds: 60)
        try #require(status == 0, "prometheus_client could not parse /metrics: \(out)\n\(text)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]])
        return list.map { Family(name: $0["name"] as? String ?? "", type: $0["type"] as? String ?? "",
                                 samples: $0["samples"] as? [[String: Any]] ?? []) }
    }

    @Test(arguments: BackendKind.testable)
    func metricsPassPromtoolAndParseIntoTheIntendedFamilies(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let promtool = try #require(findTool("promtool"), "promtool is not installed (scripts/setup installs it)")
        let dir = try TestDirectory("metrics-\(kind.rawValue)")
        let listen = E2E.ip(217, kind), mxA = E2E.ip(217, kind, host: 1), mxB = E2E.ip(217, kind, host: 2)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("a", domains: "a.test", mx: [mxA])
                                 + sinkProfile("b", domains: "b.test", mx: [mxB]), ids: dir.file("ids.txt"))
        defer { sink.terminate() }
        let (_, pA) = try sink.address("a"), (_, pB) = try sink.address("b")
        // down.test routes to a port nothing listens on: its mail stays queued (delayed).
        let configPath = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <domain a.test>
                route [\(mxA)]:\(pA)
            </domain>
            <domain b.test>
                route [\(mxB)]:\(pB)
            </domain>
            <domain down.test>
                route [\(mxB)]:1
                retry-after 1h
            </domain>
            """))
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        for i in 0..<6 {
            let domain = ["a.test", "b.test", "down.test"][i % 3]
            #expect(try c.send(to: ["u\(i)@\(domain)"], id: "m\(i)") == nil)
        }
        c.quit()
        let delivered = E2E.waitUntil(60) {
            let s = try? E2E.json(E2E.httpGet(d.management, "/status"))
            let deferrals = (s?["deferrals"] as? Int ?? 0) + (s?["queueDeferrals"] as? Int ?? 0)
            return (s?["delivered"] as? Int ?? 0) >= 4 && deferrals >= 1
        }
        try #require(delivered, "4 deliveries and a deferral expected: \(d.log.suffix(2000))")

        let text = String(decoding: try E2E.httpGet(d.management, "/metrics"), as: UTF8.self)
        let (lintStatus, lint) = runTool(promtool, ["check", "metrics"], stdin: text, seconds: 60)
        #expect(lintStatus == 0 && lint.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
                "promtool check metrics: \(lint)\n\(text)")

        let families = try Self.parse(text)
        let names = families.map(\.name)
        #expect(names.count == Set(names).count, "a family split into several (scattered samples): \(names)")
        var byName: [String: Family] = [:]
        for f in families { byName[f.name] = f }
        let unexpected = Set(byName.keys).subtracting(Self.expectedFamilies.keys)
        let missing = Set(Self.expectedFamilies.keys).subtracting(byName.keys)
        #expect(unexpected.isEmpty && missing.isEmpty, "unexpected: \(unexpected), missing: \(missing)")
        for (name, type) in Self.expectedFamilies { #expect(byName[name]?.type == type, "\(name): \(byName[name]?.type ?? "-")") }

        func value(_ family: String, _ sample: String? = nil, _ labels: [String: String] = [:]) -> Double? {
            byName[family]?.samples.first { s in
                (sample == nil || s["name"] as? String == sample)
                    && labels.allSatisfy { (s["labels"] as? [String: String])?[$0.key] == $0.value }
            }?["value"] as? Double
        }
        let status = try E2E.json(E2E.httpGet(d.management, "/status"))
        let deliveredNow = Double(status["delivered"] as? Int ?? -1)
        #expect(value("peregrine_delivered", "peregrine_delivered_total") == deliveredNow)
        #expect(value("peregrine_received", "peregrine_received_total") == 6)
        // One latency observation per delivered recipient; +Inf bucket equals the count.
        #expect(value("peregrine_delivery_latency_seconds", "peregrine_delivery_latency_seconds_count") == deliveredNow)
        #expect(value("peregrine_delivery_latency_seconds", "peregrine_delivery_latency_seconds_bucket", ["le": "+Inf"]) == deliveredNow)
        // One sample per spool stream (one per loop): the 6 messages may all have
        // gone to one loop, so the first stream's sample alone can be 0.
        let spoolBytes = byName["peregrine_spool_written_bytes"]?.samples
            .filter { $0["name"] as? String == "peregrine_spool_written_bytes_total" }
            .compactMap { $0["value"] as? Double }.reduce(0, +) ?? 0
        #expect(spoolBytes > 0)
        // Transaction time by provider: a.test and b.test each had two transactions
        // that ended in delivery (down.test never got as far as MAIL FROM).
        for provider in ["a.test", "b.test"] {
            let n = value("peregrine_smtp_transaction_duration_seconds", "peregrine_smtp_transaction_duration_seconds_count",
                          ["provider": provider])
            #expect(n == 2, "\(provider): \(n.map(String.init(describing:)) ?? "no series")")
        }
        #expect(value("peregrine_smtp_transaction_duration_seconds", "peregrine_smtp_transaction_duration_seconds_count",
                      ["provider": "down.test"]) == nil)
        // No DKIM in this config: the family is there, with nothing observed.
        #expect(value("peregrine_dkim_signing_duration_seconds", "peregrine_dkim_signing_duration_seconds_count") == 0)
        // Every completed fsync is observed once: at least one per stream that took messages, at most one per fsync issued.
        func total(_ family: String, _ sample: String) -> Double {
            byName[family]?.samples.filter { $0["name"] as? String == sample }.compactMap { $0["value"] as? Double }.reduce(0, +) ?? 0
        }
        let fsyncsTimed = total("peregrine_spool_fsync_duration_seconds", "peregrine_spool_fsync_duration_seconds_count")
        #expect(fsyncsTimed >= 1 && fsyncsTimed <= total("peregrine_spool_fsyncs", "peregrine_spool_fsyncs_total"),
                "\(fsyncsTimed) timed of \(total("peregrine_spool_fsyncs", "peregrine_spool_fsyncs_total"))")
        #expect((value("process_open_fds") ?? 0) > 0)
        #expect((value("process_resident_memory_bytes") ?? 0) > 1_000_000)
        // down.test's two recipients wait (delayed after a refused connection, or still ready behind the backed-off host).
        let down = ["queue": "down.test/vmta1"]
        #expect((value("peregrine_queue_delayed", nil, down) ?? 0) + (value("peregrine_queue_ready", nil, down) ?? 0) == 2)
        #expect((value("peregrine_recipients_delayed") ?? 0) + (value("peregrine_recipients_ready") ?? 0) == 2)

        // Bounded cardinality: ?queues=1 keeps the largest queue and sums the rest under "_other".
        let capped = try Self.parse(String(decoding: try E2E.httpGet(d.management, "/metrics?queues=1"), as: UTF8.self))
        let ready = try #require(capped.first { $0.name == "peregrine_queue_delayed" })
        let queueLabels = ready.samples.compactMap { ($0["labels"] as? [String: String])?["queue"] }
        #expect(queueLabels == ["down.test/vmta1", "_other"], "\(queueLabels)")
        let none = try Self.parse(String(decoding: try E2E.httpGet(d.management, "/metrics?queues=0"), as: UTF8.self))
        #expect(none.first { $0.name == "peregrine_queue_delayed" }?.samples.map { ($0["labels"] as? [String: String])?["queue"] }
                == ["_other"])
    }
}
