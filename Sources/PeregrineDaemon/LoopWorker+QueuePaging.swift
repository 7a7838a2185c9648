import PeregrineIO
import PeregrineSpool
import PeregrineEngine

/// `max-queued-in-memory` on one loop (QueuePaging.swift): a spooled
/// message beyond the limit is marked on disk only in its stream's live set
/// (no scheduler object, no envelope in memory); a timer reads such messages
/// back, oldest first, while there is room.
extension LoopWorker {
    /// Hands a spooled message to the scheduler, or leaves it on disk when the
    /// limit is reached or older messages of this loop wait on disk (first in,
    /// first out). Runs on the loop owning the message's spool stream.
    func dispatchOrPageOut(_ message: QueuedMessage) {
        let paging = daemon.paging
        if paging.isLimited, let spool = spools[message.stream],
           queuedOnDisk > 0 || !paging.hasRoom(for: message.pendingCount),
           spool.liveSet.pageOut(message.id) {
            pagedOut += 1
            schedulePageIn()
            return
        }
        daemon.dispatch(message, from: self)
    }

    /// Messages of this loop's streams kept on disk only.
    var queuedOnDisk: Int { spools.values.reduce(0) { $0 + $1.liveSet.onDiskMessageCount } }

    /// How often a loop with messages on disk looks for room: short next to
    /// a delivery, so a draining queue never waits on it for long.
    static var pageInInterval: UInt64 { 20_000_000 }

    /// Arms the page-in timer unless it is armed.
    func schedulePageIn() {
        guard !pageInArmed else { return }
        pageInArmed = true
        _ = loop.scheduleTimer(after: Self.pageInInterval) { [weak self] in
            guard let self else { return }
            self.pageInArmed = false
            self.pageIn()
        }
    }

    /// Reads messages back while there is room, oldest first per stream.
    func pageIn() {
        let paging = daemon.paging
        var room = paging.room
        // A limit lifted by a reload: everything comes back.
        if !paging.isLimited { room = Int.max }
        for (stream, spool) in spools.sorted(by: { $0.key < $1.key }) {
            while room > 0, let id = spool.liveSet.pageIn() {
                guard let entry = spool.liveSet.entry(id) else { continue }
                let pending = entry.states.pendingCount
                room -= pending
                paging.startArriving(pending)
                spool.readMessage(id) { [unowned self] result in
                    paging.stopArriving(pending)
                    switch result {
                    case .success(let m):
                        guard m.entry.states.pendingCount > 0 else { return }
                        self.pagedIn += 1
                        // Expiry counts from reception, not from the read (monotonic clock, back-dated).
                        let ageNs = UInt64(max(wallClockMilliseconds() - m.envelope.receivedAt, 0)) &* 1_000_000
                        let now = self.loop.now
                        let message = self.makeMessage(id: id, envelope: m.envelope, stream: stream,
                                                       size: m.entry.location.bodyLength,
                                                       recordLength: Int(m.entry.location.recordLength),
                                                       receivedAt: now > ageNs ? now - ageNs : 0, states: m.entry.states)
                        self.daemon.dispatch(message, from: self)
                    case .failure(let e):
                        // Left in the spool: the next start recovers it (never lost, only late).
                        self.daemon.log("loop \(self.index): cannot read message \(id) back from the spool: \(e); "
                                        + "it stays there until the next start")
                    }
                }
            }
        }
        if queuedOnDisk > 0 { schedulePageIn() }
    }
}
