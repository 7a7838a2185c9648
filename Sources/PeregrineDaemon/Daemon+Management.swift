import Foundation
import PeregrineIO
import PeregrineHTTP
import PeregrineSpool

/// The management API (JSON over HTTP on http-mgmt-port): what `peregrine ctl`
/// talks to. Reads gather a snapshot from every loop through `execute`;
/// actions are applied on each loop to the queues it owns.
extension Daemon {
    struct QueueSnapshot {
        var queue: String, mode: String, paused: Bool, suspendedSeconds: Double, suspendReason: String
        var ready: Int, delayed: Int, connections: Int
        /// The max-msg-rate in force (backoff-max-msg-rate while in backoff).
        var rate: String
        var delivered: UInt64, bounced: UInt64, deferred: UInt64, lastReply: String
        /// The MX site a rolled-up queue belongs to ("" when not rolled up); its
        /// mode, suspension, connections and rate are the site's.
        var site = ""
        /// The queue's source IP while a pattern list has it disabled for the domain ("" otherwise).
        var disabledSource = "", disabledSeconds: Double = 0
        /// How long the oldest ready recipient's message has waited (0 when nothing is ready).
        var oldestReadyAgeSeconds: Double = 0
        var vmta = ""
        var json: [String: Any] {
            ["queue": queue, "mode": mode, "paused": paused, "suspendedSeconds": suspendedSeconds,
             "suspendReason": suspendReason, "ready": ready, "delayed": delayed, "connections": connections,
             "rate": rate, "delivered": delivered, "bounced": bounced, "deferred": deferred, "lastReply": lastReply,
             "site": site, "disabledSource": disabledSource, "disabledSeconds": disabledSeconds,
             "oldestReadyAgeSeconds": oldestReadyAgeSeconds, "vmta": vmta]
        }
    }

    struct WorkerSnapshot {
        var received: UInt64 = 0, delivered: UInt64 = 0, bounced: UInt64 = 0, deferrals: UInt64 = 0
        var queueDeferrals: UInt64 = 0, injectionConnections: UInt64 = 0, openInjections = 0
        var outboundConnections = 0
        var injectionRefusals: UInt64 = 0, acceptFailures: UInt64 = 0
        /// max-queued-in-memory: messages on disk only now, and paged out / in so far.
        var queuedOnDisk = 0, pagedOut: UInt64 = 0, pagedIn: UInt64 = 0
        /// Bodies sent straight from the spool file (wire form, plain connection).
        var bodiesSentFromFile: UInt64 = 0
        var queues: [QueueSnapshot] = []
        var spools: [SpoolSnapshot] = []
        var deliveryLatency = PrometheusHistogram(bounds: PrometheusHistogram.deliveryLatencyBounds)
        var transactionTimes = TransactionTimes()
        var dkimSigning = PrometheusHistogram(bounds: LatencyMetrics.dkimSigningBounds)
    }

    /// One spool stream's health, as `/status` and `/metrics` show it.
    struct SpoolSnapshot {
        var stream: Int, health: SpoolHealth, pendingOutcomes: Int, faults: Int, recoveries: Int, outcomesDropped: Int
        var bytesWritten: Int64 = 0, fsyncs = 0, segmentsCreated = 0, segmentsDeleted = 0
        var fsyncLatency = SpoolLatency()
        var json: [String: Any] {
            var j: [String: Any] = ["stream": stream, "state": health.name, "pendingOutcomes": pendingOutcomes,
                                    "faults": faults, "recoveries": recoveries, "outcomesDropped": outcomesDropped]
            if let r = health.reason { j["reason"] = r }
            return j
        }
    }

    /// Collects one snapshot per worker, then calls `done` on worker 0's loop.
    func gather(_ done: @escaping ([WorkerSnapshot]) -> Void) {
        // Both only ever touched on worker 0's loop (the replies are handed there).
        let results = LoopConfined([WorkerSnapshot?](repeating: nil, count: workers.count))
        let remaining = LoopConfined(workers.count)
        let home = workers[0]
        for w in workers {
            w.loop.execute {
                let now = w.loop.now
                var s = WorkerSnapshot(received: w.received, delivered: w.delivered, bounced: w.bounced,
                                       deferrals: w.deferrals, queueDeferrals: w.queueDeferrals,
                                       injectionConnections: w.injectionConnections, openInjections: w.openInjections,
                                       outboundConnections: w.engine.connectionCount,
                                       injectionRefusals: w.injectionRefusals, acceptFailures: w.acceptFailures)
                s.deliveryLatency = w.deliveryLatency
                s.queuedOnDisk = w.queuedOnDisk
                s.pagedOut = w.pagedOut
                s.pagedIn = w.pagedIn
                s.bodiesSentFromFile = w.engine.bodiesSentFromFile
                s.transactionTimes = w.transactionTimes
                s.dkimSigning = w.dkim.signingTime
                for (stream, spool) in w.spools.sorted(by: { $0.key < $1.key }) {
                    s.spools.append(SpoolSnapshot(stream: stream, health: spool.health,
                                                  pendingOutcomes: spool.pendingOutcomeCount,
                                                  faults: spool.stats.faults, recoveries: spool.stats.recoveries,
                                                  outcomesDropped: spool.stats.outcomesDropped,
                                                  bytesWritten: spool.stats.bytesWritten, fsyncs: spool.stats.fsyncs,
                                                  segmentsCreated: spool.stats.segmentsCreated,
                                                  segmentsDeleted: spool.stats.segmentsDeleted,
                                                  fsyncLatency: spool.stats.fsyncLatency))
                }
                for q in w.engine.queues.values.sorted(by: { $0.key < $1.key }) {
                    let suspended = q.suspendedUntil > now ? Double(q.suspendedUntil - now) / 1e9 : 0
                    s.queues.append(QueueSnapshot(queue: q.key.description, mode: q.mode.rawValue, paused: q.isPaused,
                                                  suspendedSeconds: suspended, suspendReason: suspended > 0 ? q.suspendReason : "",
                                                  ready: q.readyRecipients, delayed: q.delayedRecipients,
                                                  connections: q.connections,
                                                  rate: q.throttle.policy.maxMsgRate(inBackoff: q.isBackoff).description,
                                                  delivered: q.delivered, bounced: q.bounced,
                                                  deferred: q.deferred, lastReply: q.lastReply,
                                                  site: q.site?.key.description ?? ""))
                    s.queues[s.queues.count - 1].vmta = q.key.vmta
                    if let oldest = q.oldestReadyReceivedAt, now > oldest {
                        s.queues[s.queues.count - 1].oldestReadyAgeSeconds = Double(now - oldest) / 1e9
                    }
                    if let until = w.engine.sourceDisabledUntil(q.key) {
                        s.queues[s.queues.count - 1].disabledSource =
                            w.policies.virtualMTA(named: q.key.vmta)?.sourceAddress?.ip ?? q.key.vmta
                        s.queues[s.queues.count - 1].disabledSeconds = Double(until - now) / 1e9
                    }
                }
                let snapshot = LoopConfined(s)
                home.loop.execute {
                    results.value[w.index] = snapshot.value
                    remaining.value -= 1
                    if remaining.value == 0 { done(results.value.compactMap { $0 }) }
                }
            }
        }
    }

    /// Applies `action` on every loop; `done` gets the summed count on worker 0's loop.
    func broadcast(_ action: @escaping (LoopWorker<Loop>) -> Int, _ done: @escaping (Int) -> Void) {
        let total = LoopConfined(0), remaining = LoopConfined(workers.count)
        let home = workers[0]
        for w in workers {
            w.loop.execute {
                let n = action(w)
                home.loop.execute {
                    total.value += n
                    remaining.value -= 1
                    if remaining.value == 0 { done(total.value) }
                }
            }
        }
    }

    func handleManagement(_ request: HTTPRequest, respond: @escaping (HTTPResponse) -> Void) {
        // http-access: monitor may read, admin may also act; with no rules only loopback is admin.
        // Under the lock: a SIGHUP reload assigns `config` on a Dispatch
        // thread, and an unlocked copy racing that store can over-release the
        // old config (its regexes were then freed twice: a crash in regfree).
        let current = currentConfig
        let level = request.remoteAddress.map { current.httpAccessLevel(forIP: $0.ip) } ?? .none
        if level == .none {
            respond(.error(403, "access denied for \(request.remoteAddress?.ip ?? "unknown client") (http-access)"))
            return
        }
        if request.method != "GET" && request.method != "HEAD" && level != .admin {
            respond(.error(403, "monitor access is read-only (http-access)"))
            return
        }
        // Host, Origin, token and content type (ManagementRequestGuard).
        if let refusal = managementGuard.refusal(for: request) {
            respond(refusal)
            return
        }
        switch (request.method, request.path) {
        case ("GET", "/"):
            // The live monitor (MonitorPage.swift): a page that polls the routes below.
            respond(MonitorPage.response)
        case ("GET", "/status"):
            gather { snaps in respond(Self.json(self.statusJSON(snaps))) }
        case ("GET", "/queues"), ("GET", "/topqueues"):
            let top = request.path == "/topqueues"
            gather { snaps in
                var queues = snaps.flatMap(\.queues)
                if top {
                    queues.sort { ($0.ready + $0.delayed) > ($1.ready + $1.delayed) }
                    queues = Array(queues.prefix(20))
                }
                respond(Self.json(["queues": queues.map(\.json)]))
            }
        case ("GET", "/metrics"):
            // ?queues=N (or all, or 0): how many queues get per-queue series; the rest are summed under queue="_other".
            let q = request.queryParameter("queues")
            let limit = q == "all" ? Int.max : (q.flatMap { Int($0) }.map { max(0, $0) } ?? Self.metricsQueueLimit)
            gather { snaps in respond(self.metrics(snaps, queueLimit: limit).response) }
        case ("POST", "/reload"):
            // Answered once every loop runs on the new settings (on this loop: worker 0's).
            let reply = LoopConfined(respond)
            if case .failure(let e) = reload({ reply.value(Self.json(["reloaded": true])) }) {
                respond(.error(400, "\(e)"))
            }
        case ("POST", let path) where path.hasPrefix("/queues/"):
            let verb = String(path.dropFirst("/queues/".count))
            let params = Self.parameters(request)
            guard let pattern = params["queue"], !pattern.isEmpty else {
                respond(.error(400, "missing 'queue' (domain/vmta, * allowed)"))
                return
            }
            let action: (LoopWorker<Loop>) -> Int
            switch verb {
            case "pause": action = { $0.engine.pause(pattern) }
            case "resume": action = { $0.engine.resume(pattern) }
            case "schedule": action = { $0.engine.schedule(pattern) }
            case "delete": action = { $0.engine.delete(pattern) }
            case "set-mode":
                guard let mode = params["mode"], mode == "normal" || mode == "backoff" else {
                    respond(.error(400, "set-mode needs mode=normal or mode=backoff"))
                    return
                }
                action = { $0.engine.setMode(pattern, backoff: mode == "backoff") }
            default:
                respond(.notFound(path))
                return
            }
            broadcast(action) { n in
                var answer: [String: Any] = ["queue": pattern, "action": verb, "matched": n]
                // A pause also holds the queues the pattern matches that do not exist yet.
                if verb == "pause" { answer["appliesToNewQueues"] = true }
                respond(Self.json(answer))
            }
        default:
            if !handleManagementExtras(request, respond: respond) && !handleSuppressionAPI(request, respond: respond) {
                respond(.notFound(request.path))
            }
        }
    }

    private func statusJSON(_ snaps: [WorkerSnapshot]) -> [String: Any] {
        let queues = snaps.flatMap(\.queues)
        func sum(_ f: (WorkerSnapshot) -> UInt64) -> UInt64 { snaps.reduce(0) { $0 + f($1) } }
        let uptime = uptimeSeconds
        let delivered = sum(\.delivered)
        let spools = snaps.flatMap(\.spools).sorted { $0.stream < $1.stream }
        // The worst stream decides: ok only when every stream is.
        let worst = spools.first { if case .failed = $0.health { return true } else { return false } }
            ?? spools.first { !$0.health.isOK }
        var spool: [String: Any] = ["state": worst?.health.name ?? "ok", "streams": spools.map(\.json)]
        if let r = worst?.health.reason { spool["reason"] = r }
        return [
            "spool": spool,
            "version": "peregrine 0.1",
            "backend": Loop.kind.rawValue,
            "threads": workers.count,
            "uptimeSeconds": uptime,
            "received": sum(\.received),
            "delivered": delivered,
            "bounced": sum(\.bounced),
            "deferrals": sum(\.deferrals),
            "queueDeferrals": sum(\.queueDeferrals),
            "deliveredPerSecond": uptime > 0 ? Double(delivered) / uptime : 0,
            "connections": ["inbound": snaps.reduce(0) { $0 + $1.openInjections },
                            "outbound": snaps.reduce(0) { $0 + $1.outboundConnections },
                            "inboundTotal": sum(\.injectionConnections),
                            "inboundRefused": sum(\.injectionRefusals),
                            "acceptFailures": sum(\.acceptFailures)],
            "queued": ["queues": queues.count, "ready": queues.reduce(0) { $0 + $1.ready },
                       "delayed": queues.reduce(0) { $0 + $1.delayed }],
            // max-queued-in-memory: messages kept on disk only, and the recipients the scheduler holds.
            "queuedOnDisk": snaps.reduce(0) { $0 + $1.queuedOnDisk },
            "pagedOut": sum(\.pagedOut),
            "pagedIn": sum(\.pagedIn),
            "queuedInMemoryRecipients": paging.residentRecipients,
            // total-max-smtp-out and VMTA max-smtp-out: slots in use and queues waiting for one.
            "connectionBudgets": connectionBudgets.all.map { b -> [String: Any] in
                let s = b.snapshot
                return ["name": b.name, "limit": s.limit, "used": s.used, "waitingQueues": s.waiting]
            },
            // Per loop (SO_REUSEPORT spreads connections by a hash): lets a
            // test or an operator see that every loop takes connections.
            "loops": snaps.enumerated().map { i, s in
                ["loop": i, "inboundTotal": s.injectionConnections, "inbound": s.openInjections,
                 "outbound": s.outboundConnections] as [String: Any]
            },
        ]
    }

    /// Per-queue series by default: the largest queues, so a scrape stays bounded with
    /// hundreds of thousands of queues (issue 17); `/metrics?queues=N|all` changes it.
    static var metricsQueueLimit: Int { 100 }

    /// The Prometheus exposition: base units (seconds, bytes), `_total` counters, one
    /// contiguous family per name (PrometheusText groups them), bounded label sets.
    func metrics(_ snaps: [WorkerSnapshot], queueLimit: Int) -> PrometheusText {
        var p = PrometheusText()
        func sum(_ f: (WorkerSnapshot) -> UInt64) -> UInt64 { snaps.reduce(0) { $0 + f($1) } }
        p.counter("peregrine_received_total", help: "Messages accepted for delivery", value: sum(\.received))
        p.counter("peregrine_delivered_total", help: "Recipients delivered", value: sum(\.delivered))
        p.counter("peregrine_bounced_total", help: "Recipients bounced", value: sum(\.bounced))
        p.counter("peregrine_deferrals_total", help: "Transient failures", value: sum(\.deferrals))
        p.counter("peregrine_queue_deferrals_total", help: "Whole-queue deferrals (every MX failed)", value: sum(\.queueDeferrals))
        p.gauge("peregrine_uptime_seconds", help: "Seconds since the daemon started", value: uptimeSeconds)
        p.gauge("peregrine_queued_on_disk_messages", help: "Messages kept on disk only (max-queued-in-memory)",
                value: snaps.reduce(0) { $0 + $1.queuedOnDisk })
        p.counter("peregrine_paged_in_total", help: "Messages read back from the spool into the scheduler (max-queued-in-memory)",
                  value: sum(\.pagedIn))

        p.counter("peregrine_bodies_sent_from_file_total",
                  help: "Message bodies sent straight from the spool file (sendfile/splice), not copied", value: sum(\.bodiesSentFromFile))

        var latency = PrometheusHistogram(bounds: PrometheusHistogram.deliveryLatencyBounds)
        for s in snaps { latency.merge(s.deliveryLatency) }
        p.histogram("peregrine_delivery_latency_seconds",
                    help: "Injection (or spool recovery after a restart) to delivery, per delivered recipient", latency)
        latencyMetrics(snaps, into: &p)
        clusterMetrics(into: &p)

        p.gauge("peregrine_connections", help: "Open SMTP connections", value: snaps.reduce(0) { $0 + $1.openInjections },
                labels: [("direction", "inbound")])
        p.gauge("peregrine_connections", value: snaps.reduce(0) { $0 + $1.outboundConnections }, labels: [("direction", "outbound")])
        p.counter("peregrine_inbound_connections_total", help: "Injection connections accepted", value: sum(\.injectionConnections))
        p.counter("peregrine_inbound_refusals_total", help: "Injection connections answered 421 (max-smtp-in)",
                  value: sum(\.injectionRefusals))
        p.counter("peregrine_accept_failures_total", help: "Accepts that failed (descriptors exhausted)", value: sum(\.acceptFailures))

        for sp in snaps.flatMap(\.spools).sorted(by: { $0.stream < $1.stream }) {
            let labels = [("stream", String(sp.stream))]
            p.gauge("peregrine_spool_healthy", help: "1 while the spool stream accepts messages, 0 while degraded or failed",
                    value: sp.health.isOK ? 1 : 0, labels: labels)
            p.gauge("peregrine_spool_pending_outcomes", help: "Outcome records kept in memory until written",
                    value: sp.pendingOutcomes, labels: labels)
            p.counter("peregrine_spool_faults_total", help: "Spool write or fsync failures", value: UInt64(sp.faults),
                      labels: labels)
            p.counter("peregrine_spool_outcomes_dropped_total", help: "Outcomes not kept (over the in-memory bound)",
                      value: UInt64(sp.outcomesDropped), labels: labels)
            p.counter("peregrine_spool_written_bytes_total", help: "Bytes written to the spool", value: sp.bytesWritten, labels: labels)
            p.counter("peregrine_spool_fsyncs_total", help: "fsync calls on spool segments", value: UInt64(sp.fsyncs), labels: labels)
            p.counter("peregrine_spool_segments_created_total", help: "Spool segments created", value: UInt64(sp.segmentsCreated),
                      labels: labels)
            p.counter("peregrine_spool_segments_deleted_total", help: "Spool segments deleted once every message in them completed",
                      value: UInt64(sp.segmentsDeleted), labels: labels)
        }

        var queues = snaps.flatMap(\.queues)
        p.gauge("peregrine_queues", help: "Delivery queues (domain/vmta) that exist", value: queues.count)
        p.gauge("peregrine_recipients_ready", help: "Recipients ready for delivery, all queues", value: queues.reduce(0) { $0 + $1.ready })
        p.gauge("peregrine_recipients_delayed", help: "Recipients waiting for a retry, all queues",
                value: queues.reduce(0) { $0 + $1.delayed })
        // Per VMTA: bounded by the configuration, not by the mail.
        var byVMTA: [String: Int] = [:]
        for q in queues { byVMTA[q.vmta, default: 0] += q.connections }
        for (vmta, n) in byVMTA.sorted(by: { $0.key < $1.key }) {
            p.gauge("peregrine_vmta_connections", help: "Open outbound connections per virtual MTA", value: n, labels: [("vmta", vmta)])
        }
        queues.sort { ($0.ready + $0.delayed, $1.queue) > ($1.ready + $1.delayed, $0.queue) }
        let shown = queues.prefix(queueLimit), rest = queues.dropFirst(queueLimit)
        for q in shown {
            let labels = [("queue", q.queue)]
            p.gauge("peregrine_queue_ready", help: "Recipients ready per queue (the largest queues; the rest under queue=\"_other\")",
                    value: q.ready, labels: labels)
            p.gauge("peregrine_queue_delayed", help: "Recipients waiting for a retry per queue", value: q.delayed, labels: labels)
            p.gauge("peregrine_queue_connections", help: "Open connections per queue", value: q.connections, labels: labels)
            p.gauge("peregrine_queue_backoff", help: "1 while the queue is in backoff mode", value: q.mode == "backoff" ? 1 : 0,
                    labels: labels)
            p.gauge("peregrine_queue_paused", help: "1 while the queue is paused", value: q.paused ? 1 : 0, labels: labels)
            p.gauge("peregrine_queue_oldest_ready_age_seconds", help: "Age of the oldest ready message per queue",
                    value: q.oldestReadyAgeSeconds, labels: labels)
        }
        if !rest.isEmpty {
            let labels = [("queue", "_other")]
            p.gauge("peregrine_queue_ready", value: rest.reduce(0) { $0 + $1.ready }, labels: labels)
            p.gauge("peregrine_queue_delayed", value: rest.reduce(0) { $0 + $1.delayed }, labels: labels)
            p.gauge("peregrine_queue_connections", value: rest.reduce(0) { $0 + $1.connections }, labels: labels)
            p.gauge("peregrine_queue_backoff", value: rest.filter { $0.mode == "backoff" }.count, labels: labels)
            p.gauge("peregrine_queue_paused", value: rest.filter(\.paused).count, labels: labels)
            p.gauge("peregrine_queue_oldest_ready_age_seconds", value: rest.map(\.oldestReadyAgeSeconds).max() ?? 0, labels: labels)
        }
        appendWebhookMetrics(to: &p)
        ProcessMetrics.append(to: &p)
        return p
    }

    /// Query parameters, then the body's fields read as its declared type
    /// (the guard has let only JSON and form bodies through).
    static func parameters(_ request: HTTPRequest) -> [String: String] {
        var out = request.queryParameters
        guard !request.body.isEmpty else { return out }
        switch ManagementRequestGuard.mediaType(request.header("Content-Type")) {
        case "application/json":
            if let object = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any] {
                for (k, v) in object { out[k] = "\(v)" }
            }
        case "application/x-www-form-urlencoded":
            for (k, v) in request.formParameters { out[k] = v }
        default:
            break
        }
        return out
    }

    static func json(_ object: [String: Any]) -> HTTPResponse {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            return .error(500, "cannot encode JSON")
        }
        return .json(String(decoding: data, as: UTF8.self))
    }
}
