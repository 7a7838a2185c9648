import Foundation
import PeregrineHTTP

/// `GET /webhooks` (`ctl show webhooks`) and the `peregrine_webhook_*` metric families.
extension Daemon {
    func webhooksJSON() -> [String: Any] {
        guard let hooks = webhooks else { return ["webhooks": [Any]()] }
        let log = hooks.log.status
        let disk = hooks.log.diskUsage
        let queue = hooks.log.backlog
        return [
            "webhooks": hooks.status().map { s -> [String: Any] in
                var o: [String: Any] = ["name": s.name, "url": s.url, "backlog": s.backlog,
                                        "oldestPendingSeconds": s.oldestPendingSeconds, "sent": s.sent, "batches": s.batches,
                                        "failures": s.failures, "expired": s.expired, "cursor": s.cursor]
                o["lastError"] = s.lastError ?? ""
                if let t = s.lastErrorTime { o["lastErrorTime"] = t }
                return o
            },
            "eventLog": ["eventsWritten": log.written, "writeErrors": log.errors, "lastError": log.lastError ?? "",
                         "segments": disk.segments, "bytes": disk.bytes, "pending": queue.pending,
                         "eventsRefused": queue.refused],
        ]
    }

    /// Only with a `<webhook>` (a daemon without one shows none of these families).
    func appendWebhookMetrics(to p: inout PrometheusText) {
        guard let hooks = webhooks else { return }
        let statuses = hooks.status()
        func family(_ name: String, _ help: String, counter: Bool, _ value: (WebhookService.WebhookStatus) -> UInt64) {
            for (i, s) in statuses.enumerated() {
                let h = i == 0 ? help : nil
                if counter { p.counter(name, help: h, value: value(s), labels: [("webhook", s.name)]) }
                else { p.gauge(name, help: h, value: value(s), labels: [("webhook", s.name)]) }
            }
        }
        family("peregrine_webhook_backlog_events", "Events in the log after the webhook's cursor (every type)", counter: false) { $0.backlog }
        family("peregrine_webhook_oldest_pending_age_seconds", "Age of the oldest event not yet acknowledged", counter: false) {
            UInt64(max(0, $0.oldestPendingSeconds))
        }
        family("peregrine_webhook_events_sent_total", "Events acknowledged (2xx) by the endpoint", counter: true) { $0.sent }
        family("peregrine_webhook_batches_sent_total", "POSTs acknowledged (2xx) by the endpoint", counter: true) { $0.batches }
        family("peregrine_webhook_failures_total", "POSTs that failed (non-2xx, refused, timeout, TLS, garbage)", counter: true) { $0.failures }
        family("peregrine_webhook_events_expired_total", "Events passed after webhook-max-age (accounting w records)", counter: true) { $0.expired }
        let log = hooks.log.status
        p.counter("peregrine_webhook_log_events_written_total", help: "Events written durably to the webhook event log", value: log.written)
        p.counter("peregrine_webhook_log_write_errors_total", help: "Failed writes or fdatasyncs of the webhook event log", value: log.errors)
        p.counter("peregrine_webhook_log_events_refused_total",
                  help: "Events refused with the log's queue full while its disk failed (their outcomes are delivered again after a restart)",
                  value: hooks.log.backlog.refused)
        p.gauge("peregrine_webhook_log_bytes", help: "Bytes of webhook event log segments on disk", value: hooks.log.diskUsage.bytes)
    }
}
