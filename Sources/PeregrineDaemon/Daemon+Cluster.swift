import PeregrineIO
import PeregrineConfig
import PeregrineEngine
import PeregrineRedis

/// Cluster mode (cluster-redis, CLUSTER.md): one coordinator on worker 0's
/// loop; every worker's engine reports the backoffs its replies cause, the
/// coordinator publishes them, and the backoffs other nodes publish are
/// handed to the worker that owns the queue. Each engine asks the
/// coordinator for connection leases and message tokens through its
/// WorkerClusterLimits (Daemon+ClusterLimits.swift).
extension Daemon {
    func startCluster() {
        let settings = currentConfig.cluster
        guard let redis = settings.redis, let first = workers.first else { return }
        let nodeName = settings.nodeName ?? hostName
        let backoffDuration: UInt64 = 3_600_000_000_000
        first.loop.execute { [self] in
            let connection = RedisConnection(loop: first.loop, address: redis)
            let coordinator = RedisClusterCoordinator(connection: connection,
                                                      options: .init(nodeName: nodeName, nodeCount: settings.nodeCount,
                                                                     leaseTTL: settings.leaseTTL.nanoseconds))
            coordinator.log = { [self] line in self.log(line) }
            coordinator.onBackoff = { [self] name, _ in
                // "domain/vmta" from Redis; a name this node cannot read is skipped.
                guard let slash = name.lastIndex(of: "/") else { return }
                let key = QueueKey(domain: String(name[..<slash]), vmta: String(name[name.index(after: slash)...]))
                let owner = self.owner(of: key, asking: first)
                owner.loop.execute { owner.engine.applyClusterBackoff(key, from: "a cluster node") }
            }
            coordinator.onOverShare = { [self] site, excess in self.shedClusterConnections(site: site, count: excess, worker: 0) }
            cluster = coordinator
            if suppression != nil {
                let feed = RedisSuppressionSync(coordinator: coordinator)
                feed.onEntry = { [self] op, entry, reason, time in self.applyClusterSuppression(op, entry, reason, time) }
                coordinator.suppressionSync = feed
                feed.start()
            }
            coordinator.start()
        }
        for w in workers {
            let limits = WorkerClusterLimits(engineLoop: w.loop, coordinatorLoop: first.loop) { [self] in self.cluster }
            let limitsBox = LoopConfined(limits)
            w.loop.execute { [self] in
                w.engine.clusterLimits = limitsBox.value
                w.engine.onBackoffEntered = { [self] q in
                    let name = q.key.description
                    let duration = q.policy.backoffToNormalAfter?.nanoseconds ?? backoffDuration
                    first.loop.execute { [self] in self.cluster?.publishBackoff(queue: name, duration: duration) }
                }
            }
        }
    }

    /// Has `count` of the node's leased connections to `site` quit after
    /// their current transaction, worker by worker from `worker` (each says
    /// how many it covers), on the coordinator's loop in between.
    private func shedClusterConnections(site: String, count: Int, worker index: Int) {
        guard count > 0, index < workers.count, let first = workers.first else { return }
        let w = workers[index]
        w.loop.execute { [self] in
            let covered = w.engine.shedClusterConnections(site: site, count: count)
            first.loop.execute { [self] in self.shedClusterConnections(site: site, count: count - covered, worker: index + 1) }
        }
    }
}
