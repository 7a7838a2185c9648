import PeregrineIO

/// `max-cold-virtual-mta-msg`: how many messages each queue has sent
/// through its `-cold` VMTA today (UTC days), shared by every loop. Kept in
/// memory: a restart starts the day's count again.
public final class ColdVMTAQuota: Sendable {
    private struct Count { var day: Int64; var sent: Int }
    private let counts = Locked<[QueueKey: Count]>([:])

    public init() {}

    /// Takes one of today's `limit` cold messages for `queue`; false when they are used up.
    public func take(queue: QueueKey, limit: Int, day: Int64) -> Bool {
        counts.withLock { c in
            var entry = c[queue] ?? Count(day: day, sent: 0)
            if entry.day != day { entry = Count(day: day, sent: 0) }
            guard entry.sent < limit else { c[queue] = entry; return false }
            entry.sent += 1
            c[queue] = entry
            return true
        }
    }
}
