import Foundation
import PeregrineIO
import PeregrineHTTP
import PeregrineEngine

/// The management routes behind the operator's newer `ctl` commands (issue 17):
/// reset counters, delete by job id, show vmtas, show domain NAME, trace ADDRESS.
/// Called from handleManagement after the access checks; false when the route is not one of these.
extension Daemon {
    func handleManagementExtras(_ request: HTTPRequest, respond: @escaping (HTTPResponse) -> Void) -> Bool {
        let params = Self.parameters(request)
        switch (request.method, request.path) {
        case ("GET", "/webhooks"):
            respond(Self.json(webhooksJSON()))
        case ("POST", "/counters/reset"):
            // Totals and the latency histogram; per-queue counters belong to the queues and restart with them.
            broadcast({ w in
                w.received = 0; w.delivered = 0; w.bounced = 0; w.deferrals = 0; w.queueDeferrals = 0
                w.injectionConnections = 0; w.injectionRefusals = 0; w.acceptFailures = 0
                w.deliveryLatency = PrometheusHistogram(bounds: PrometheusHistogram.deliveryLatencyBounds)
                w.transactionTimes = TransactionTimes()
                w.dkim.signingTime = PrometheusHistogram(bounds: LatencyMetrics.dkimSigningBounds)
                return 1
            }) { n in respond(Self.json(["reset": true, "loops": n])) }
        case ("POST", "/jobs/delete"):
            guard let job = params["job"] ?? params["jobId"], !job.isEmpty else {
                respond(.error(400, "missing 'job' (the x-job of the messages to delete)"))
                return true
            }
            broadcast({ $0.engine.delete(jobId: job) }) { n in respond(Self.json(["job": job, "action": "delete", "recipients": n])) }
        case ("GET", "/cluster"):
            respond(Self.json(clusterJSON()))
        case ("GET", "/vmtas"):
            let config = currentConfig
            gather { snaps in
                var connections: [String: Int] = [:], queued: [String: Int] = [:]
                for q in snaps.flatMap(\.queues) {
                    connections[q.vmta, default: 0] += q.connections
                    queued[q.vmta, default: 0] += q.ready + q.delayed
                }
                var names = config.virtualMTAs.map(\.name)
                for extra in connections.keys.sorted() where !names.contains(extra) { names.append(extra) }
                let vmtas: [[String: Any]] = names.map { name in
                    let v = config.virtualMTA(named: name)
                    return ["name": name, "sourceIP": v?.sourceIP ?? "", "hostName": v?.hostName ?? config.hostName ?? "",
                            "pools": config.virtualMTAPools.filter { $0.members.contains(name.lowercased()) }.map(\.name),
                            "connections": connections[name] ?? 0, "queued": queued[name] ?? 0]
                }
                respond(Self.json(["vmtas": vmtas]))
            }
        case ("GET", "/domain"):
            guard let name = params["name"], !name.isEmpty else {
                respond(.error(400, "missing 'name' (a domain)"))
                return true
            }
            let vmta = params["vmta"].flatMap { $0.isEmpty ? nil : $0 } ?? workers[0].defaultVMTA
            respond(Self.json(resolvedDomain(name, vmta: vmta)))
        case ("GET", "/trace"):
            guard let address = params["address"], let at = address.lastIndex(of: "@"), address.index(after: at) < address.endIndex else {
                respond(.error(400, "missing or malformed 'address' (user@domain)"))
                return true
            }
            let domain = String(address[address.index(after: at)...]).lowercased()
            let vmta = params["vmta"].flatMap { $0.isEmpty ? nil : $0 } ?? workers[0].defaultVMTA
            let key = QueueKey(domain: domain, vmta: vmta)
            let standing = workers[0].engine.standingPauses.filter { key.matches(pattern: $0) }
            gather { snaps in
                var trace = self.resolvedDomain(domain, vmta: vmta)
                trace["address"] = address
                trace["queue"] = key.description
                trace["vmtaSource"] = params["vmta"] == nil ? "default-virtual-mta (no x-virtual-mta given)" : "as given"
                if let pool = self.workers[0].policies.pool(ofVMTA: vmta) { trace["pool"] = ["name": pool.name, "members": pool.members] }
                trace["standingPauses"] = standing
                if let q = snaps.flatMap(\.queues).first(where: { $0.queue == key.description }) { trace["queueNow"] = q.json }
                respond(Self.json(trace))
            }
        default:
            return false
        }
        return true
    }

    /// The settings a queue for `domain` on `vmta` gets, every field as the daemon resolved it
    /// (like PowerMTA's `show domain`): the merged <domain> blocks, the VMTA's own, the defaults.
    func resolvedDomain(_ domain: String, vmta: String) -> [String: Any] {
        let settings = workers[0].policies.policy(for: QueueKey(domain: domain, vmta: vmta))
        var fields: [String: String] = [:]
        for child in Mirror(reflecting: settings).children {
            if let label = child.label { fields[label] = String(describing: child.value) }
        }
        let source = workers[0].policies.virtualMTA(named: vmta)
        return ["domain": domain, "vmta": vmta, "settings": fields,
                "sourceAddress": source?.sourceAddress?.ip ?? "", "heloName": source?.hostname ?? ""]
    }
}
