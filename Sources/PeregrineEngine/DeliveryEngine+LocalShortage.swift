#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// An episode of connects that failed for lack of local resources: since
/// when (loop time), how many, and the first error.
struct LocalShortage {
    var since: UInt64
    var failures: Int
    var reason: String
}

/// Connects that fail here, not at the receiver: out of descriptors
/// (EMFILE, ENFILE), socket buffers (ENOBUFS) or memory (ENOMEM). The MX host
/// did nothing wrong, so it is not backed off (no `tq` "trying the next MX
/// host", no escalation of its retry schedule), and the next host would fail
/// the same way. The queue waits its retry time instead (DESIGN principles
/// 8-9: back off, do not hammer), its mail stays ready (no `t` record per
/// recipient per wave), and the log says it once when the shortage starts and
/// once, with the count of failed connects, when a connection opens again,
/// instead of a line per failed connection (stop 15: ~200 lines a second).
extension DeliveryEngine {
    static func isLocalShortage(_ e: IOError) -> Bool {
        guard let n = e.errnoValue else { return false }
        return n == EMFILE || n == ENFILE || n == ENOBUFS || n == ENOMEM
    }

    /// A connection of `q` could not be opened for lack of local resources.
    func connectFailedLocally(_ q: DeliveryQueue, reason: String) {
        let now = loop.now
        if localShortage == nil {
            localShortage = LocalShortage(since: now, failures: 1, reason: reason)
            observer.localShortageBegan(reason: reason)
        } else {
            localShortage?.failures += 1
        }
        q.lastReply = reason
        // One wait per wave: the wave's other connections fail the same way and must not extend it.
        if q.suspendedUntil <= now {
            let delay = q.policy.retryAfter(inBackoff: q.isBackoff).delay(afterFailures: 1).nanoseconds
            q.suspend(until: now &+ delay, reason: reason)
        }
        kick(q)
    }

    /// A connection opened: a shortage, if there was one, is over.
    func connectSucceeded() {
        guard let s = localShortage else { return }
        localShortage = nil
        observer.localShortageEnded(failedConnects: s.failures, nanoseconds: loop.now &- s.since)
    }
}
