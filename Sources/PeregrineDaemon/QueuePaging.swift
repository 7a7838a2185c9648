import Synchronization

/// `max-queued-in-memory` (issue #18): how many pending recipients the
/// scheduler holds in memory, shared by every loop. Beyond the limit a
/// spooled message stays on disk only (its spool stream's live set marks it)
/// and its owner loop reads it back, oldest first, as deliveries free room
/// (LoopWorker+QueuePaging.swift). The count is approximate across loops
/// (each checks, then adds): the limit can be passed by what loops admit at
/// the same moment, never by more.
final class QueuePaging: Sendable {
    /// 0: no limit.
    private let limit = Atomic<Int>(0)
    /// Pending recipients of messages handed to the engines (`Daemon.dispatch`).
    private let resident = Atomic<Int>(0)
    /// Recipients being read back from the spool (admitted, not yet dispatched).
    private let arriving = Atomic<Int>(0)

    var isLimited: Bool { limit.load(ordering: .relaxed) > 0 }
    var residentRecipients: Int { resident.load(ordering: .relaxed) }

    func setLimit(_ n: Int?) { limit.store(max(n ?? 0, 0), ordering: .relaxed) }

    /// Whether `recipients` more may be held in memory now. A message is never
    /// refused when nothing is held (one larger than the limit still moves).
    func hasRoom(for recipients: Int) -> Bool {
        let cap = limit.load(ordering: .relaxed)
        guard cap > 0 else { return true }
        let held = resident.load(ordering: .relaxed) + arriving.load(ordering: .relaxed)
        return held == 0 || held + recipients <= cap
    }

    /// Recipients that may still be read back now (0 when unlimited: nothing is paged out then).
    var room: Int {
        let cap = limit.load(ordering: .relaxed)
        guard cap > 0 else { return 0 }
        return max(cap - resident.load(ordering: .relaxed) - arriving.load(ordering: .relaxed), 0)
    }

    func dispatched(_ recipients: Int) { resident.add(recipients, ordering: .relaxed) }
    func finished(_ recipients: Int) { resident.subtract(recipients, ordering: .relaxed) }
    func startArriving(_ recipients: Int) { arriving.add(recipients, ordering: .relaxed) }
    func stopArriving(_ recipients: Int) { arriving.subtract(recipients, ordering: .relaxed) }
}
