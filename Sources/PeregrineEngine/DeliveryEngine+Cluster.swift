/// The engine's side of cluster-wide backoff (issue #21): another node
/// entered backoff for a queue, so this node's queue of the same name does
/// too. The engine knows nothing of Redis; the daemon relays.
extension DeliveryEngine {
    /// Puts `key`'s queue into backoff because node `from` did. A queue this
    /// node does not have yet is created, so mail that arrives later starts in
    /// backoff. It leaves backoff by its own policy (backoff-to-normal-after),
    /// as the publishing node's does.
    public func applyClusterBackoff(_ key: QueueKey, from node: String) {
        let q = queue(for: key)
        guard !q.isBackoff else { return }
        q.enterBackoff(now: loop.now)
        observer.queueModeChanged(q, .enteredBackoff(reason: "cluster: backoff published by \(node)"))
        kick(q)
    }
}
