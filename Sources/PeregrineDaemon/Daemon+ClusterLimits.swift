import PeregrineIO
import PeregrineConfig
import PeregrineEngine
import PeregrineRedis

/// One worker's side of the cluster's shared limits (cluster-max-smtp-out,
/// cluster-max-msg-rate; CLUSTER.md). The engine calls on its own loop; the
/// node's one coordinator lives on worker 0's loop, so each call hops there
/// and its answer hops back. One coordinator per node keeps the fallback
/// share (limit ÷ cluster-node-count) per node whatever the loop count.
final class WorkerClusterLimits<Loop: EventLoop>: ClusterLimits {
    private let engineLoop: LoopConfined<Loop>
    private let coordinatorLoop: Loop
    /// Worker 0's view of the daemon's coordinator (nil once stopped).
    private let coordinator: @Sendable () -> RedisClusterCoordinator<Loop>?

    init(engineLoop: Loop, coordinatorLoop: Loop, coordinator: @escaping @Sendable () -> RedisClusterCoordinator<Loop>?) {
        self.engineLoop = LoopConfined(engineLoop)
        self.coordinatorLoop = coordinatorLoop
        self.coordinator = coordinator
    }

    func acquireConnections(site: String, limit: Int, wanted: Int, _ done: @escaping (Int) -> Void) {
        let back = LoopConfined(done), engineLoop = engineLoop, coordinator = coordinator
        coordinatorLoop.execute {
            // No coordinator (stopping): nothing is granted; the queue asks again later.
            guard let c = coordinator() else { engineLoop.value.execute { back.value(0) }; return }
            c.acquireConnections(site: site, limit: limit, wanted: wanted) { granted in
                engineLoop.value.execute { back.value(granted) }
            }
        }
    }

    func releaseConnections(site: String, count: Int) {
        let coordinator = coordinator
        coordinatorLoop.execute { coordinator()?.releaseConnections(site: site, count: count) }
    }

    func takeMessageTokens(site: String, rate: Rate, wanted: Int, _ done: @escaping (Int, UInt64, UInt64) -> Void) {
        let back = LoopConfined(done), engineLoop = engineLoop, coordinator = coordinator
        let intervalMicros = Int(min(UInt64(Int.max), ClusterMessageGate.clusterInterval(rate) / 1_000))
        coordinatorLoop.execute {
            guard let c = coordinator() else {
                engineLoop.value.execute { let now = engineLoop.value.now; back.value(0, now + 100_000_000, now) }
                return
            }
            c.takeMessageTokens(site: site, intervalMicros: intervalMicros, wanted: wanted) { granted, wait, start in
                // Both loops read the same monotonic clock. Times taken from
                // the answer's arrival, after Redis read its clock: the slots
                // land no earlier than the cluster's. Read here, where the
                // reply is parsed, not after the hop to the engine's loop: the
                // hop's delay would shift this batch's slots onto the next
                // batch's (the mapping error is part of the rate's jitter budget).
                let arrival = c.loop.now
                engineLoop.value.execute { back.value(granted, arrival + wait, arrival + start) }
            }
        }
    }
}
