import PeregrineIO
import PeregrineSpool
import PeregrineRedis

/// The suppression list shared across the cluster (CLUSTER.md): this node's
/// own changes go to Redis (RedisSuppressionSync), the other nodes' come
/// back from it and are applied here without being published again.
extension Daemon {
    /// A change this node made (bounce, complaint, API); a no-op when not a cluster.
    func publishSuppression(_ op: SuppressionLog.Op, _ text: [UInt8], _ reason: SuppressionReason, _ time: Int64) {
        guard currentConfig.cluster.redis != nil, let home = workers.first else { return }
        let feedOp: RedisSuppressionSync<Loop>.Op = op == .add ? .add : .remove
        home.loop.execute { [self] in self.cluster?.suppressionSync?.publish(feedOp, entry: text, reason: reason.rawValue, time: time) }
    }

    /// An entry read from the cluster's stream (worker 0's loop). The list's
    /// writer makes it durable like any other change.
    func applyClusterSuppression(_ op: RedisSuppressionSync<Loop>.Op, _ text: [UInt8], _ reason: UInt8, _ time: Int64) {
        guard let list = suppression, SuppressionKey.isStoredForm(text) else { return }
        list.apply(op == .add ? .add : .remove, normalised: text, reason: SuppressionReason(rawValue: reason) ?? .manual, time: time)
    }
}
