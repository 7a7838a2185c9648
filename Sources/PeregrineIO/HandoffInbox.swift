import Synchronization

/// The multi-producer, single-consumer inbox behind `EventLoop.execute`.
/// Producers append under a mutex; the loop swaps the whole batch out once
/// per turn, so the lock is held for an append or a swap, never for the work.
/// The wake-up (eventfd write, queue.async, …) is the backend's business: `push`
/// reports whether the inbox was empty, i.e. whether the loop needs waking.
public final class HandoffInbox: Sendable {
    private let pending = Mutex<[@Sendable () -> Void]>([])

    public init() {}

    /// Appends `work`; returns true when the inbox was empty before (wake the loop).
    public func push(_ work: @escaping @Sendable () -> Void) -> Bool {
        pending.withLock { list in
            list.append(work)
            return list.count == 1
        }
    }

    /// Takes everything queued so far, in submission order, into `batch`
    /// (which the loop reuses between turns to avoid allocating).
    public func drain(into batch: inout [@Sendable () -> Void]) {
        pending.withLock { list in
            swap(&list, &batch)
        }
    }

    public var isEmpty: Bool {
        pending.withLock { $0.isEmpty }
    }
}
