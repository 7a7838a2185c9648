#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineDKIM
import PeregrineTLS

/// What every loop of a sink run shares: the policy (behind a lock, since
/// per-IP limits span loops), the recorded message ids and the stats.
public final class SinkShared: @unchecked Sendable {
    let lock = Locked<Void>()
    let policy: SinkPolicy
    let startedAt = monotonicNanoseconds()
    /// `--tls-cert`/`--tls-key`: STARTTLS on every listener (set before the loops start).
    public internal(set) var tlsContext: TLSContext?
    /// `--dkim-key`: public keys by `selector._domainkey.domain` (set before the loops start, then read-only).
    public internal(set) var dkimKeys: [String: DKIMPublicKey] = [:]
    /// `--dns-fault`: names the DNS responder fails for (set before the loops start).
    public internal(set) var dnsFaults: [String: SinkDNSFault] = [:]

    // Recorded ids (behind `idLock`): a byte buffer flushed to `idFD` in large writes.
    private let idLock = Locked<Void>()
    private var idFD: Int32 = -1
    private var idBuffer: [UInt8] = []
    private var idsRecorded: UInt64 = 0
    private var idsMissing: UInt64 = 0
    private var idWriteError: String?
    static let idFlushThreshold = 64 * 1024

    /// `--reports-via`: asynchronous bounces and complaints (set before the loops start).
    public internal(set) var asyncReports: SinkAsyncReports?

    public init(policy: SinkPolicy) {
        self.policy = policy
    }

    /// Opens (truncating) the file accepted message ids are written to, and
    /// starts the thread that writes the buffer out every `idFlushInterval`:
    /// a reader (the bench, a test) sees an id within a second of its
    /// message, not only once 64 KB are buffered or the sink stops.
    public func recordIds(to path: String) throws(IOError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IOError.lastErrno("open \(path)") }
        idFD = fd
        idBuffer.reserveCapacity(Self.idFlushThreshold * 2)
        let stop = idFlusherStop
        let thread = Thread { [weak self] in
            // The semaphore is signalled once, at finishIds; until then each timed-out wait is a flush tick.
            while stop.wait(timeout: .now() + Self.idFlushInterval) == .timedOut {
                guard let self else { return }
                self.idLock.withLock { self.flushIdsLocked() }
            }
        }
        thread.name = "sink-record-ids"
        thread.start()
    }

    /// At most this long between an accepted message and its id in the file.
    static let idFlushInterval: DispatchTimeInterval = .milliseconds(500)
    private let idFlusherStop = DispatchSemaphore(value: 0)

    public var isRecordingIds: Bool { idFD >= 0 }

    /// Adds one accepted message's id (nil: the message had no X-Loadgen-Id header),
    /// as "ID ARRIVAL-UNIX-NS": the benchmark pairs it with the loadgen's send time.
    func record(id: ArraySlice<UInt8>?) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let arrival = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        idLock.withLock {
            guard let id else { idsMissing &+= 1; return }
            idBuffer.append(contentsOf: id)
            idBuffer.append(32)
            // Decimal digits written in place and reversed: no array per message.
            let start = idBuffer.count
            var v = arrival
            repeat { idBuffer.append(UInt8(48 + v % 10)); v /= 10 } while v > 0
            idBuffer[start...].reverse()
            idBuffer.append(10)
            idsRecorded &+= 1
            if idBuffer.count >= Self.idFlushThreshold { flushIdsLocked() }
        }
    }

    private func flushIdsLocked() {
        guard idFD >= 0, !idBuffer.isEmpty else { return }
        var off = 0
        idBuffer.withUnsafeBytes { raw in
            while off < raw.count {
                let n = write(idFD, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    idWriteError = String(cString: strerror(errno))
                    break
                }
                off += n
            }
        }
        idBuffer.removeAll(keepingCapacity: true)
    }

    /// Writes out buffered ids and closes the file (at exit).
    public func finishIds() {
        if idFD >= 0 { idFlusherStop.signal() }
        idLock.withLock {
            flushIdsLocked()
            if idFD >= 0 { close(idFD); idFD = -1 }
        }
    }

    /// Ends every penalty box at every provider (POST /penalty-box/lift); returns how many were on.
    func liftPenaltyBoxes() -> Int {
        let now = monotonicNanoseconds()
        return lock.withLock { policy.liftPenaltyBoxes(now: now) }
    }

    // MARK: Stats

    /// Everything counted so far, as a JSON-ready object.
    public func statsObject() -> [String: Any] {
        var providers: [String: Any] = [:]
        var total = SinkCounters()
        var peak = 0
        lock.withLock {
            for p in policy.providers {
                let t = p.totals
                total.merge(t)
                peak += p.peakOpen
                var ips: [String: Any] = [:]
                for (ip, s) in p.ips { ips[ip] = s.counters.jsonObject }
                var obj = t.jsonObject
                obj["open_connections"] = p.open
                if p.mxFaults.values.contains(where: { $0.kind == .blackhole }) { obj["sessions_blackholed"] = p.blackholed }
                if p.mxFaults.values.contains(where: { $0.kind == .reset }) { obj["sessions_reset"] = p.reset }
                obj["ips"] = ips
                providers[p.profile.name] = obj
            }
        }
        total.peakConcurrentConnections = peak
        var out: [String: Any] = [
            "uptime_seconds": Double(monotonicNanoseconds() - startedAt) / 1e9,
            "time_scale": policy.timeScale,
            "providers": providers,
            "totals": total.jsonObject,
        ]
        idLock.withLock {
            if idFD >= 0 || idsRecorded > 0 {
                var ids: [String: Any] = ["recorded": idsRecorded, "missing_header": idsMissing]
                if let e = idWriteError { ids["write_error"] = e }
                out["record_ids"] = ids
            }
        }
        if let r = asyncReports { out["async_reports"] = r.statsObject }
        return out
    }

    public func statsJSON(pretty: Bool = false) -> [UInt8] {
        var options: JSONSerialization.WritingOptions = [.sortedKeys]
        if pretty { options.insert(.prettyPrinted) }
        guard let data = try? JSONSerialization.data(withJSONObject: statsObject(), options: options) else {
            return Array("{}".utf8)
        }
        return [UInt8](data)
    }
}
