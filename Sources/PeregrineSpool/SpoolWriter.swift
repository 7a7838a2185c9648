#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// Settings of one spool stream's writer.
public struct SpoolWriterOptions: Sendable {
    /// Longest a durable waiter waits for its fsync to *start* (ns). 0 = as soon
    /// as the previous fsync has completed (next loop turn). Larger values trade
    /// latency for bigger batches.
    public var maxCommitDelay: UInt64 = 0
    /// How long outcome records may sit unsynced when no message is waiting (ns).
    public var outcomeFlushDelay: UInt64 = 50_000_000
    /// A new segment is started once the active one reaches this size.
    public var segmentSize: Int64 = 64 << 20
    /// Size of the pooled write buffers (records larger than this get their own).
    public var bufferSize: Int = 1 << 20
    /// A non-active segment whose live bytes fall under this fraction is compacted.
    public var compactionThreshold: Double = 0.25
    /// Loop index, mixed into message ids.
    public var loopIndex: Int = 0
    /// First wait (ns) before retrying after a write or fsync failed (disk full,
    /// I/O error); doubles on each failed retry up to `retryMaxDelayNanoseconds`.
    public var retryFirstDelayNanoseconds: UInt64 = 100_000_000
    public var retryMaxDelayNanoseconds: UInt64 = 5_000_000_000
    /// Outcome records kept in memory while they cannot be written (40 bytes
    /// each). Past this, further outcomes are counted in
    /// `SpoolWriterStats.outcomesDropped` (a restart then redelivers those
    /// recipients: a duplicate, never a loss).
    public var maxPendingOutcomes: Int = 1 << 20

    public init(maxCommitDelay: UInt64 = 0, segmentSize: Int64 = 64 << 20, loopIndex: Int = 0) {
        self.maxCommitDelay = maxCommitDelay
        self.segmentSize = segmentSize
        self.loopIndex = loopIndex
    }
}

/// Counters for `spool-check`, benchmarks and the management API.
public struct SpoolWriterStats: Sendable {
    public var messages = 0
    public var outcomes = 0
    public var bytesWritten: Int64 = 0
    public var writes = 0
    public var fsyncs = 0
    /// How long each fdatasync took (`/metrics`: peregrine_spool_fsync_duration_seconds).
    public var fsyncLatency = SpoolLatency()
    public var commits = 0
    public var segmentsCreated = 0
    public var segmentsDeleted = 0
    public var messagesCompacted = 0
    /// Write or fsync failures, and recoveries from them.
    public var faults = 0
    public var recoveries = 0
    /// Outcomes that could not be kept until written (over `maxPendingOutcomes`).
    public var outcomesDropped = 0
}

/// Whether a spool stream can take new messages.
public enum SpoolHealth: Sendable, Equatable, CustomStringConvertible {
    case ok
    /// A write or fsync failed (e.g. disk full): new messages are refused
    /// (451) and outcomes kept in memory while the writer retries.
    case degraded(SpoolError)
    /// Cannot continue (segment numbers exhausted): only a restart helps.
    case failed(SpoolError)

    public var isOK: Bool { self == .ok }
    public var name: String {
        switch self {
        case .ok: return "ok"
        case .degraded: return "degraded"
        case .failed: return "failed"
        }
    }
    public var reason: String? {
        switch self {
        case .ok: return nil
        case .degraded(let e), .failed(let e): return e.description
        }
    }
    public var description: String { reason.map { "\(name): \($0)" } ?? name }
}

/// The append side of one spool stream, owned by one event loop (principle 4:
/// no locks on the write path).
///
/// Records are encoded into pooled buffers and written at the tracked offset;
/// group commit issues one `fdatasync` for everything written since the
/// previous one, with at most one commit in flight. A message's `durable`
/// callback runs once the fsync covering its last byte has completed: that is
/// what the SMTP `250` waits for. Outcome records ride along with the next
/// commit (or a lazy one after `outcomeFlushDelay`).
///
/// On-disk order the recovery relies on: every segment starts with a catalogue
/// of the stream's other segments; a segment is sealed (its last bytes
/// fsynced) before anything is written to the next, so only the newest can end
/// torn; a segment is unlinked only after a durable record says so.
///
/// Faults: when a write or fsync fails (ENOSPC, EIO), the writer becomes
/// `degraded`: the messages waiting for that commit and new ones fail (the
/// client gets 451, never 250), outcomes are kept in memory (bounded by
/// `maxPendingOutcomes`), and after a back-off it cuts every segment back to
/// what its last completed fsync covered (after a failed fsync the kernel may
/// have dropped the dirty pages, so nothing later is trusted), rewrites the
/// kept outcomes and commits; once that commit completes it is `ok` again.
///
/// All methods must be called on the I/O's thread (the loop's).
///
/// Daemon wiring, per loop `i`:
/// ```
/// let streams = try SpoolRecovery.recoverAll(spoolDirectory: dir).get()   // before the loops start
/// // stream i (DIR/loop-i) → its queues get streams[i].messages (envelope, states; bodies stay on disk)
/// let spool = try SpoolWriter(loop: loop, directory: SpoolFiles.streamDirectory(spool: dir, loop: i),
///                             recovered: streams[i], options: SpoolWriterOptions(loopIndex: i))
/// let id = spool.append(envelope: env, bodyChunks: chunks) { result in /* 250 on .success, 451 on .failure */ }
/// spool.recordOutcome(id, recipient: k, state: .delivered)                   // not waited for
/// spool.readBody(id, into: buffer) { result in /* body slice, valid until buffer is reused */ }
/// ```
/// A message's outcomes and body reads go through the writer of the stream
/// that holds it (hand them to that loop with `execute` when its recipients
/// are queued on another loop).
/// If there are more `loop-N` streams on disk than loops (thread count
/// lowered), open a writer for each extra stream on some loop too, so its
/// messages are delivered and its segments compacted away.
public final class SpoolStreamWriter<IO: SpoolIO> {
    public typealias Durable = (Result<MessageLocation, SpoolError>) -> Void

    public let io: IO
    public let directory: String
    /// Where the writer's problems are reported (degraded, writable again,
    /// dropped outcomes, compaction): stderr unless the owner routes them
    /// (the daemon sends them to its log file too). Called on the loop's thread.
    public var report: (String) -> Void = { fputs("peregrine spool: \($0)\n", stderr) }
    public let options: SpoolWriterOptions
    /// What is live in this stream (messages, their locations and states).
    public let liveSet: SpoolLiveSet
    public private(set) var stats = SpoolWriterStats()
    /// ok, or degraded / failed with the error that caused it.
    public private(set) var health: SpoolHealth = .ok
    /// Outcomes recorded but not yet covered by a completed fsync.
    public var pendingOutcomeCount: Int { pendingOutcomes.count - pendingOutcomeHead }
    /// The error new appends fail with, while not `ok`.
    public var failure: SpoolError? {
        switch health {
        case .ok: return nil
        case .degraded(let e), .failed(let e): return e
        }
    }

    final class Segment {
        let number: UInt32
        let path: String
        let handle: FileHandle
        /// Where the next record goes.
        var end: Int64 = 0
        /// End of the bytes handed to `write` so far.
        var issuedEnd: Int64 = 0
        /// End of the bytes a completed fsync covers.
        var syncedEnd: Int64 = 0
        /// Lowest offset of a failed write since the last retry: nothing from
        /// there on counts as synced, whatever a later fsync reports.
        var writeFailedAt: Int64?
        init(number: UInt32, path: String, handle: FileHandle) {
            self.number = number; self.path = path; self.handle = handle
        }
    }

    struct Buffer {
        var memory: UnsafeMutableRawBufferPointer
        var used = 0
        var segment: Segment
        var fileOffset: Int64
        var serial: UInt64
        var pooled: Bool
    }

    struct Waiter {
        var serial: UInt64
        var location: MessageLocation
        /// Set for a new message placed in the live set (taken out again if it fails).
        var placed: MessageID?
        var done: Durable
    }

    struct PendingOutcome {
        var id: MessageID
        var recipient: Int
        var state: RecipientState
        /// The buffer it was encoded into (0 = not written yet).
        var serial: UInt64
    }

    private var active: Segment
    /// Open segments by number (the active one and older ones, for reads).
    private var segmentsByNumber: [UInt32: Segment] = [:]
    private var files: [UInt32: FileHandle] = [:]
    private var current: Buffer?
    private var pool: [UnsafeMutableRawBufferPointer] = []
    private var nextSerial: UInt64 = 1
    private var lastIssuedSerial: UInt64 = 0
    private var outstandingWrites: [UInt64] = []
    private var dirty: [Segment] = []

    /// While set, the previous segment's last bytes are not yet fsynced:
    /// buffers for newer segments wait in `held` (see the type's comment).
    private var sealing: Segment?
    private var sealSerial: UInt64 = 0
    private var held: [Buffer] = []

    private var waiters: [Waiter] = []
    private var waiterHead = 0
    private var outcomesUnsynced = false
    private var pendingOutcomes: [PendingOutcome] = []
    private var pendingOutcomeHead = 0

    private var commitInFlight = false
    private var commitTimer: TimerHandle?
    private var commitTimerUrgent = false
    /// A commit whose fsyncs are done, waiting for writes it covers to complete.
    private var completedCover: UInt64?
    /// The segments the commit in flight syncs, the end each is synced to,
    /// and whether its fdatasync has completed successfully.
    private var commitMarks: [(segment: Segment, end: Int64, synced: Bool)] = []

    /// Segments whose deletion record is written, by the serial of its buffer:
    /// unlinked once a commit covers it.
    private var pendingDeletions: [UInt32: UInt64] = [:]
    private var maintenanceDue = true
    private var compacting: UInt32?

    private var retryTimer: TimerHandle?
    private var retryDelay: UInt64 = 0
    /// True while the commit that ends a degraded spell is in flight.
    private var recovering = false

    private let idHi: UInt64
    private var idCounter: UInt64 = 0
    /// Padding written by a retry that has nothing else to write.
    static var probeBytes: Int { 4096 }

    /// Opens a writer for the stream in `directory`. Pass the stream's recovery
    /// result (its live set carries over); the writer always starts a new segment.
    public init(io: IO, directory: String, recovered: SpoolStreamRecovery? = nil,
                options: SpoolWriterOptions = SpoolWriterOptions()) throws(SpoolError) {
        self.io = io
        self.directory = directory
        self.options = options
        self.liveSet = recovered?.liveSet ?? SpoolLiveSet()
        try io.makeDirectory(directory)
        let existing = SpoolRecovery.listSegments(directory: directory, fileSystem: io)
        let first = max(recovered?.nextSegment ?? 1, (existing.last ?? 0) + 1)
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        idHi = UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
        let path = SpoolRecovery.segmentPath(directory: directory, number: first)
        let handle: FileHandle
        do { handle = try io.openFile(path, create: true, truncate: true) } catch { throw .loop(path: path, error) }
        active = Segment(number: first, path: path, handle: handle)
        segmentsByNumber[first] = active
        files[first] = handle
        liveSet.addSegment(first)
        io.syncDirectory(directory)
        stats.segmentsCreated += 1
        writeCatalogue()
        maintain()
    }

    deinit {
        if let c = current, c.pooled { c.memory.deallocate() }
        for b in held where b.pooled { b.memory.deallocate() }
        for b in pool { b.deallocate() }
    }

    public var activeSegment: UInt32 { active.number }
    /// True while a segment's live messages are being rewritten forward.
    public var isCompacting: Bool { compacting != nil }
    /// True when nothing appended is still waiting for its fsync.
    public var isIdle: Bool {
        !hasWaiters && !commitInFlight && current == nil && dirty.isEmpty && held.isEmpty && pendingOutcomeCount == 0
    }

    private func makeID() -> MessageID {
        idCounter &+= 1
        return MessageID(hi: idHi, lo: (UInt64(options.loopIndex & 0xFF) << 56) | (idCounter & 0x00FF_FFFF_FFFF_FFFF))
    }

    /// The catalogue record that opens the active segment: every other segment
    /// present, except those whose deletion is already recorded.
    private func writeCatalogue() {
        let list = liveSet.segments.keys.filter { $0 != active.number && pendingDeletions[$0] == nil }.sorted()
        let (ptr, _) = reserve(SpoolRecordFormat.segmentStartRecordSize(count: list.count))
        SpoolRecordFormat.encodeSegmentStart(segments: list, into: ptr)
        liveSet.noteWritten(segment: active.number, bytes: SpoolRecordFormat.segmentStartRecordSize(count: list.count))
        requestCommit(urgent: false)
    }

    // MARK: Appending

    /// Appends a new message; `body` is copied before this returns. `durable`
    /// runs on the loop once the message is on disk and fsynced (or failed).
    /// Returns the message's id.
    @discardableResult
    public func append(envelope: SpoolEnvelope, body: UnsafeRawBufferPointer, durable: @escaping Durable) -> MessageID {
        let id = makeID()
        append(id: id, envelope: envelope, states: nil, body: body, place: true, durable: durable)
        return id
    }

    /// Appends a new message whose body arrives as consecutive chunks (e.g. the
    /// receive buffers of a DATA phase); they are gathered straight into the
    /// record, never concatenated first. Same contract as `append(envelope:body:durable:)`.
    @discardableResult
    public func append(envelope: SpoolEnvelope, bodyChunks: [UnsafeRawBufferPointer],
                       durable: @escaping Durable) -> MessageID {
        let id = makeID()
        var total = 0
        for c in bodyChunks { total += c.count }
        appendRecord(id: id, envelope: envelope, states: nil, bodyLength: total, place: true, durable: durable) { p in
            SpoolRecordFormat.encodeMessage(id: id, envelope: envelope, states: nil, bodyChunks: bodyChunks, into: p)
        }
        return id
    }

    /// Appends a message under a given id (tests, tools, compaction).
    public func append(id: MessageID, envelope: SpoolEnvelope, states: RecipientStates?, body: UnsafeRawBufferPointer,
                       place: Bool, durable: @escaping Durable) {
        appendRecord(id: id, envelope: envelope, states: states, bodyLength: body.count, place: place,
                     durable: durable) { p in
            SpoolRecordFormat.encodeMessage(id: id, envelope: envelope, states: states, body: body, into: p)
        }
    }

    private func appendRecord(id: MessageID, envelope: SpoolEnvelope, states: RecipientStates?, bodyLength: Int,
                              place: Bool, durable: @escaping Durable,
                              encode: (UnsafeMutableRawPointer) -> Int) {
        if let failure { deferCall { durable(.failure(failure)) }; return }
        let envSize = SpoolRecordFormat.envelopeSize(envelope)
        let length = SpoolRecordFormat.headerSize + envSize + bodyLength
        guard length - SpoolRecordFormat.headerSize <= SpoolRecordFormat.maxPayload, envelope.recipients.count > 0 else {
            deferCall { durable(.failure(.invalidMessage(envelope.recipients.isEmpty ? "no recipients" : "too large"))) }
            return
        }
        if active.end > 0 && active.end + Int64(length) > options.segmentSize {
            if let e = rollover() { deferCall { durable(.failure(e)) }; return }
        }
        let (ptr, offset) = reserve(length)
        _ = encode(ptr)
        let loc = MessageLocation(segment: active.number, offset: offset, recordLength: UInt32(length),
                                  bodyOffset: UInt32(SpoolRecordFormat.headerSize + envSize))
        liveSet.noteWritten(segment: active.number, bytes: length)
        var placed: MessageID?
        if place {
            liveSet.place(id, at: loc, states: states ?? RecipientStates(count: envelope.recipients.count))
            placed = id
        }
        stats.messages += 1
        waiters.append(Waiter(serial: current?.serial ?? lastIssuedSerial, location: loc, placed: placed, done: durable))
        requestCommit(urgent: true)
    }

    /// Records a recipient's final state. Not waited for: it is made durable
    /// with the next commit (a crash before that may cause a duplicate
    /// delivery, never a loss). While the spool is degraded it is kept in
    /// memory and written once the spool recovers.
    public func recordOutcome(_ id: MessageID, recipient: Int, state: RecipientState) {
        guard state.isFinal else { return }
        if case .failed = health { return }
        if pendingOutcomeCount >= options.maxPendingOutcomes {
            stats.outcomesDropped += 1
            if stats.outcomesDropped == 1 {
                report("\(directory): \(options.maxPendingOutcomes) outcomes waiting to be written; "
                      + "dropping further ones (those recipients would be delivered again after a restart)")
            }
        } else {
            var serial: UInt64 = 0
            if health.isOK { serial = encodeOutcome(id, recipient: recipient, state: state) }
            pendingOutcomes.append(PendingOutcome(id: id, recipient: recipient, state: state, serial: serial))
        }
        if liveSet.applyOutcome(id, recipient: recipient, state: state, writtenIn: active.number) == 0 {
            maintenanceDue = true
        }
        stats.outcomes += 1
        if health.isOK {
            outcomesUnsynced = true
            requestCommit(urgent: false)
        }
    }

    /// Encodes one outcome record into the current buffer; returns the buffer's serial.
    private func encodeOutcome(_ id: MessageID, recipient: Int, state: RecipientState) -> UInt64 {
        let (ptr, _) = reserve(SpoolRecordFormat.outcomeRecordSize)
        SpoolRecordFormat.encodeOutcome(id: id, recipient: recipient, state: state, into: ptr)
        liveSet.noteWritten(segment: active.number, bytes: SpoolRecordFormat.outcomeRecordSize)
        return current?.serial ?? lastIssuedSerial
    }

    /// Makes everything appended so far durable now; `done` runs after the fsync.
    public func flush(_ done: @escaping (Result<Void, SpoolError>) -> Void) {
        if let failure { deferCall { done(.failure(failure)) }; return }
        let loc = MessageLocation(segment: active.number, offset: active.end, recordLength: 0, bodyOffset: 0)
        waiters.append(Waiter(serial: current?.serial ?? lastIssuedSerial, location: loc, placed: nil,
                              done: { r in done(r.map { _ in () }) }))
        requestCommit(urgent: true)
    }

    /// Room for `length` bytes in the current buffer; returns where to encode and the file offset.
    private func reserve(_ length: Int) -> (UnsafeMutableRawPointer, Int64) {
        if let c = current, c.memory.count - c.used < length { issueWrite() }
        if current == nil {
            let pooled = length <= options.bufferSize
            let mem = pooled ? (pool.popLast() ?? .allocate(byteCount: options.bufferSize, alignment: 4096))
                             : .allocate(byteCount: length, alignment: 4096)
            current = Buffer(memory: mem, segment: active, fileOffset: active.end, serial: nextSerial, pooled: pooled)
            nextSerial += 1
        }
        let offset = active.end
        let ptr = current!.memory.baseAddress! + current!.used
        current!.used += length
        active.end += Int64(length)
        return (ptr, offset)
    }

    /// Hands the current buffer to `write` (or holds it while the previous segment is being sealed).
    private func issueWrite() {
        guard let b = current else { return }
        current = nil
        guard b.used > 0 else { release(b); return }
        if let s = sealing, b.segment !== s { held.append(b); return }
        issue(b)
    }

    private func issue(_ b: Buffer) {
        lastIssuedSerial = b.serial
        outstandingWrites.append(b.serial)
        if !dirty.contains(where: { $0 === b.segment }) { dirty.append(b.segment) }
        b.segment.issuedEnd = b.fileOffset + Int64(b.used)
        stats.writes += 1
        stats.bytesWritten += Int64(b.used)
        let path = b.segment.path
        io.write(b.segment.handle, UnsafeRawBufferPointer(rebasing: b.memory[0 ..< b.used]), at: b.fileOffset) {
            [self] result in
            if let i = outstandingWrites.firstIndex(of: b.serial) { outstandingWrites.remove(at: i) }
            release(b)
            if case .failure(let e) = result {
                b.segment.writeFailedAt = min(b.segment.writeFailedAt ?? .max, b.fileOffset)
                fault(.loop(path: path, e))
            }
            if let cover = completedCover { finishCommit(cover) }
        }
    }

    private func release(_ b: Buffer) {
        if b.pooled && pool.count < 8 { pool.append(b.memory) } else { b.memory.deallocate() }
    }

    /// Starts the next segment. The old one is sealed: nothing is written to
    /// the new one before the commit covering the old one's last bytes completes.
    private func rollover() -> SpoolError? {
        issueWrite()
        let (n, exhausted) = active.number.addingReportingOverflow(1)
        if exhausted || n > SpoolRecovery.maxSegmentNumber {
            let e = SpoolError.writerFailed("\(directory): segment numbers exhausted")
            health = .failed(e)
            failWaiters(e)
            return e
        }
        let path = SpoolRecovery.segmentPath(directory: directory, number: n)
        let handle: FileHandle
        do { handle = try io.openFile(path, create: true, truncate: true) } catch {
            let e = SpoolError.loop(path: path, error)
            fault(e)
            return e
        }
        io.syncDirectory(directory)
        if sealing == nil && (dirty.contains(where: { $0 === active }) || commitInFlight) {
            sealing = active
            sealSerial = lastIssuedSerial
        }
        active = Segment(number: n, path: path, handle: handle)
        segmentsByNumber[n] = active
        files[n] = handle
        liveSet.addSegment(n)
        stats.segmentsCreated += 1
        maintenanceDue = true
        writeCatalogue()
        requestCommit(urgent: true)
        return nil
    }

    // MARK: Group commit

    private var hasWaiters: Bool { waiterHead < waiters.count }

    private func requestCommit(urgent: Bool) {
        if commitInFlight { return }           // its completion looks again
        guard health.isOK || recovering else { return }
        if let t = commitTimer {
            if urgent && !commitTimerUrgent && options.maxCommitDelay < options.outcomeFlushDelay {
                io.cancelTimer(t)
            } else { return }
        }
        commitTimerUrgent = urgent
        commitTimer = io.scheduleTimer(after: urgent ? options.maxCommitDelay : options.outcomeFlushDelay) { [self] in
            commitTimer = nil
            startCommit()
        }
    }

    private func startCommit() {
        guard !commitInFlight, health.isOK || recovering else { return }
        issueWrite()
        outcomesUnsynced = false
        let segments = dirty
        dirty = []
        let cover = lastIssuedSerial
        guard !segments.isEmpty else {
            // Nothing new on disk (e.g. only flush() waiters): they are covered already.
            commitSucceeded(cover)
            if !dirty.isEmpty || (current?.used ?? 0) > 0 { requestCommit(urgent: hasWaiters) }
            return
        }
        commitInFlight = true
        stats.commits += 1
        commitMarks = segments.map { ($0, $0.issuedEnd, false) }
        syncSegments(segments[...], cover: cover)
    }

    /// One fdatasync at a time: after a rollover the old segment is synced
    /// first, then the new one, within the same commit.
    private func syncSegments(_ segments: ArraySlice<Segment>, cover: UInt64) {
        guard let s = segments.first else { finishCommit(cover); return }
        stats.fsyncs += 1
        let started = io.now
        io.fdatasync(s.handle) { [self] result in
            if case .failure(let e) = result {
                fault(.loop(path: s.path, e))
                finishCommit(cover)
                return
            }
            stats.fsyncLatency.observe(nanoseconds: io.now &- started)
            if let i = commitMarks.firstIndex(where: { $0.segment === s }) { commitMarks[i].synced = true }
            syncSegments(segments.dropFirst(), cover: cover)
        }
    }

    private func finishCommit(_ cover: UInt64) {
        // Every write the fsync covers must have completed (successfully) too.
        if outstandingWrites.contains(where: { $0 <= cover }) { completedCover = cover; return }
        completedCover = nil
        commitInFlight = false
        // Every write this commit covers has completed: what its fsyncs covered is
        // durable, even when the spool failed meanwhile (the retry keeps it).
        applyCommitMarks()
        guard health.isOK || recovering else {
            scheduleRetry()
            return
        }
        commitSucceeded(cover)
        if maintenanceDue { maintain() }
        if hasWaiters { requestCommit(urgent: true) }
        else if outcomesUnsynced || !dirty.isEmpty || (current?.used ?? 0) > 0 || !held.isEmpty {
            requestCommit(urgent: false)
        }
    }

    /// Everything up to `cover` is durable: segments advance their synced end,
    /// a sealed segment lets the next one be written, kept outcomes and
    /// recorded deletions are done with, waiters run.
    private func commitSucceeded(_ cover: UInt64) {
        applyCommitMarks()
        if recovering {
            recovering = false
            health = .ok
            retryDelay = 0
            stats.recoveries += 1
            report("\(directory): writable again")
            // Outcomes recorded while the recovering commit was in flight.
            for i in pendingOutcomeHead ..< pendingOutcomes.count where pendingOutcomes[i].serial == 0 {
                let o = pendingOutcomes[i]
                pendingOutcomes[i].serial = encodeOutcome(o.id, recipient: o.recipient, state: o.state)
                outcomesUnsynced = true
            }
        }
        if sealing != nil && cover >= sealSerial {
            // The next segment may be written now; if the writer has rolled
            // over again meanwhile, that one is sealed in turn before the one after it.
            sealing = nil
            if let next = held.first?.segment {
                let waiting = held.prefix { $0.segment === next }
                held.removeFirst(waiting.count)
                for b in waiting { issue(b) }
                if !held.isEmpty {
                    sealing = next
                    sealSerial = lastIssuedSerial
                }
            }
        }
        var end = pendingOutcomeHead
        while end < pendingOutcomes.count && pendingOutcomes[end].serial != 0 && pendingOutcomes[end].serial <= cover {
            end += 1
        }
        pendingOutcomeHead = end
        if pendingOutcomeHead == pendingOutcomes.count {
            pendingOutcomes.removeAll(keepingCapacity: pendingOutcomes.count <= 4096)
            pendingOutcomeHead = 0
        } else if pendingOutcomeHead > 1024 && pendingOutcomeHead * 2 > pendingOutcomes.count {
            pendingOutcomes.removeFirst(pendingOutcomeHead)
            pendingOutcomeHead = 0
        }
        var unlinked = false
        for (n, serial) in pendingDeletions where serial <= cover {
            pendingDeletions[n] = nil
            if let h = files.removeValue(forKey: n) { io.closeFile(h) }
            segmentsByNumber[n] = nil
            let path = SpoolRecovery.segmentPath(directory: directory, number: n)
            if let e = io.removeFile(path) { report("\(e)") }
            liveSet.removeSegment(n)
            stats.segmentsDeleted += 1
            unlinked = true
        }
        if unlinked { io.syncDirectory(directory) }
        fireWaiters(upTo: cover)
    }

    private func applyCommitMarks() {
        for m in commitMarks where m.synced {
            let end = min(m.end, m.segment.writeFailedAt ?? .max)
            if end > m.segment.syncedEnd { m.segment.syncedEnd = end }
        }
        commitMarks = []
    }

    private func fireWaiters(upTo cover: UInt64) {
        var end = waiterHead
        while end < waiters.count && waiters[end].serial <= cover { end += 1 }
        guard end > waiterHead else { return }
        let batch = waiters[waiterHead ..< end]
        waiterHead = end
        if waiterHead > 1024 && waiterHead * 2 > waiters.count {
            waiters.removeFirst(waiterHead)
            waiterHead = 0
        }
        for w in batch { w.done(.success(w.location)) }
    }

    private func failWaiters(_ error: SpoolError) {
        let pending = waiters[waiterHead...]
        waiters = []
        waiterHead = 0
        for w in pending {
            if let id = w.placed { liveSet.forget(id, at: w.location) }
        }
        for w in pending { w.done(.failure(error)) }
    }

    // MARK: Faults

    /// A write or fsync failed: refuse new messages, fail the waiting ones,
    /// keep outcomes, and retry after a back-off.
    private func fault(_ error: SpoolError) {
        if case .failed = health { return }
        if health.isOK {
            stats.faults += 1
            report("\(error); new messages are refused until a retry succeeds")
        }
        health = .degraded(error)
        recovering = false
        if let t = commitTimer { io.cancelTimer(t); commitTimer = nil }
        // Whatever was not handed to write is dropped: its messages fail here, its outcomes are kept.
        if let c = current { current = nil; release(c) }
        for b in held { release(b) }
        held = []
        sealing = nil
        pendingDeletions = [:]
        maintenanceDue = true
        failWaiters(error)
        if !commitInFlight { scheduleRetry() }
    }

    private func scheduleRetry() {
        guard case .degraded = health, retryTimer == nil else { return }
        retryDelay = retryDelay == 0 ? options.retryFirstDelayNanoseconds : min(retryDelay * 2, options.retryMaxDelayNanoseconds)
        retryTimer = io.scheduleTimer(after: retryDelay) { [self] in
            retryTimer = nil
            retry()
        }
    }

    /// Cuts every segment back to its synced end, rewrites the kept outcomes
    /// (and the active segment's catalogue if it was cut to nothing), commits.
    private func retry() {
        guard case .degraded = health, !recovering else { return }
        if commitInFlight || !outstandingWrites.isEmpty { scheduleRetry(); return }
        var removed = false
        for s in segmentsByNumber.values.sorted(by: { $0.number < $1.number })
        where s.end > s.syncedEnd || s.issuedEnd > s.syncedEnd {
            if s.syncedEnd == 0 && s !== active {
                // Never synced and no longer written to (a rollover happened before
                // its first commit): nothing in it is durable. Removed, so that no
                // empty segment is left before the active one.
                if let h = files.removeValue(forKey: s.number) { io.closeFile(h) }
                segmentsByNumber[s.number] = nil
                if let e = io.removeFile(s.path) { report("retry: \(e)") }
                liveSet.removeSegment(s.number)
                removed = true
                continue
            }
            if let e = io.truncateFile(s.path, length: s.syncedEnd) {
                report("retry: \(e)")
                health = .degraded(e)
                scheduleRetry()
                return
            }
            liveSet.noteWritten(segment: s.number, bytes: -Int(s.end - s.syncedEnd))
            s.end = s.syncedEnd
            s.issuedEnd = s.syncedEnd
            s.writeFailedAt = nil
        }
        if removed { io.syncDirectory(directory) }
        dirty = []
        recovering = true
        if active.end == 0 { writeCatalogue() }
        for i in pendingOutcomeHead ..< pendingOutcomes.count {
            let o = pendingOutcomes[i]
            pendingOutcomes[i].serial = encodeOutcome(o.id, recipient: o.recipient, state: o.state)
        }
        if current == nil {
            // Nothing to rewrite: probe with a page of padding, so the spool is not
            // called ok again while the disk is still full.
            let n = SpoolRecordFormat.headerSize + Self.probeBytes
            let (ptr, _) = reserve(n)
            SpoolRecordFormat.encodePadding(payloadLength: Self.probeBytes, into: ptr)
            liveSet.noteWritten(segment: active.number, bytes: n)
        }
        startCommit()
    }

    private func deferCall(_ f: @escaping () -> Void) {
        io.scheduleTimer(after: 0, f)
    }

    // MARK: Reading bodies back

    /// Reads message `id`'s record into `buffer` (at least `recordLength`
    /// bytes: see `location(of:)`), verifies it, and hands back the body slice.
    public func readBody(_ id: MessageID, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<UnsafeRawBufferPointer, SpoolError>) -> Void) {
        guard let loc = liveSet.entry(id)?.location else { deferCall { done(.failure(.unknownMessage(id))) }; return }
        readBody(at: loc, id: id, into: buffer, done)
    }

    /// For a message whose record has the wire-form flag: its body as a file
    /// range to send straight from the segment (`EventLoop.sendFile`), with
    /// its own descriptor (a `dup` of the segment's: compaction may close and
    /// unlink the segment meanwhile; the caller closes it). Reads only the
    /// record's header and envelope (`prefix`, at least `location.bodyOffset`
    /// bytes) to check the flag and the id; `nil` when the flag is not set
    /// (read the body with `readBody` then). The body's checksum is not
    /// verified on this path (that would mean reading it): recovery verifies
    /// every record, and the bytes are the ones this writer wrote and synced.
    public func bodyRange(_ id: MessageID, prefix: UnsafeMutableRawBufferPointer,
                          _ done: @escaping (Result<SpoolBodyRange?, SpoolError>) -> Void) {
        guard let loc = liveSet.entry(id)?.location else { deferCall { done(.failure(.unknownMessage(id))) }; return }
        let need = Int(loc.bodyOffset)
        guard prefix.count >= need else { deferCall { done(.failure(.bufferTooSmall(needed: need))) }; return }
        let handle: FileHandle
        if let h = files[loc.segment] { handle = h } else {
            let path = SpoolRecovery.segmentPath(directory: directory, number: loc.segment)
            do { handle = try io.openFile(path, create: false, truncate: false) } catch {
                deferCall { done(.failure(.loop(path: path, error))) }
                return
            }
            files[loc.segment] = handle
        }
        let target = UnsafeMutableRawBufferPointer(rebasing: prefix[0 ..< need])
        io.read(handle, into: target, at: loc.offset) { [self] result in
            switch result {
            case .failure(let e):
                done(.failure(.loop(path: SpoolRecovery.segmentPath(directory: directory, number: loc.segment), e)))
            case .success(let n):
                guard n == need, SpoolRecordFormat.isWireFormMessage(prefix: UnsafeRawBufferPointer(target), id: id) else {
                    done(.success(nil)); return
                }
                // The message may have moved (compaction) while the read was in flight: its old
                // copy is intact while the segment is open here, and the dup outlives its unlink.
                // A segment closed meanwhile: its descriptor number may already be another file's.
                guard files[loc.segment] == handle else { done(.success(nil)); return }
                let copy = fcntl(handle.fd, F_DUPFD_CLOEXEC, 0)
                guard copy >= 0 else { done(.success(nil)); return }
                done(.success(SpoolBodyRange(file: FileHandle(fd: copy), offset: loc.offset + Int64(loc.bodyOffset),
                                             count: loc.bodyLength)))
            }
        }
    }

    /// Reads a live message's envelope back from its record, with its current
    /// location and states (a message kept on disk only, paged in).
    public func readMessage(_ id: MessageID,
                            _ done: @escaping (Result<(envelope: SpoolEnvelope, entry: SpoolLiveSet.Entry), SpoolError>) -> Void) {
        guard let entry = liveSet.entry(id) else { deferCall { done(.failure(.unknownMessage(id))) }; return }
        let loc = entry.location
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(loc.recordLength), alignment: 16)
        readBody(at: loc, id: id, into: buf) { [self] result in
            defer { buf.deallocate() }
            switch result {
            case .failure(let e): done(.failure(e))
            case .success:
                guard let m = SpoolRecordFormat.decodeMessage(record: UnsafeRawBufferPointer(buf)) else {
                    done(.failure(.badLocation(loc))); return
                }
                // Outcomes may have landed (or compaction moved it) while the read was in flight.
                done(.success((m.envelope, liveSet.entry(id) ?? entry)))
            }
        }
    }

    /// The current location of a live message (it changes when compaction moves it).
    public func location(of id: MessageID) -> MessageLocation? { liveSet.entry(id)?.location }

    /// Reads the record at `location` (only after the message was reported durable).
    public func readBody(at loc: MessageLocation, id: MessageID? = nil, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<UnsafeRawBufferPointer, SpoolError>) -> Void) {
        let need = Int(loc.recordLength)
        guard buffer.count >= need else { deferCall { done(.failure(.bufferTooSmall(needed: need))) }; return }
        // The path is only built to open a segment or name it in an error, not per read.
        let directory = directory
        func path() -> String { SpoolRecovery.segmentPath(directory: directory, number: loc.segment) }
        let handle: FileHandle
        if let h = files[loc.segment] { handle = h } else {
            let path = path()
            do { handle = try io.openFile(path, create: false, truncate: false) } catch {
                deferCall { done(.failure(.loop(path: path, error))) }
                return
            }
            files[loc.segment] = handle
        }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< need])
        io.read(handle, into: target, at: loc.offset) { result in
            switch result {
            case .failure(let e): done(.failure(.loop(path: path(), e)))
            case .success(let n):
                let raw = UnsafeRawBufferPointer(rebasing: buffer[0 ..< min(n, need)])
                guard n == need, case .record(.message, _) = SpoolRecordFormat.frame(raw),
                      id == nil || SpoolRecordFormat.messageID(payload: UnsafeRawBufferPointer(rebasing: raw[SpoolRecordFormat.headerSize...])) == id
                else { done(.failure(.badLocation(loc))); return }
                done(.success(UnsafeRawBufferPointer(rebasing: raw[Int(loc.bodyOffset)...])))
            }
        }
    }

    // MARK: Space: deletion and compaction

    /// Records the deletion of segments nothing needs (they are unlinked once
    /// that record is durable) and starts compacting a sparse one.
    /// Runs after commits when something died; call it to force a pass.
    public func maintain() {
        guard health.isOK else { maintenanceDue = true; return }
        maintenanceDue = false
        for n in liveSet.deletableSegments(active: active.number)
        where n != compacting && pendingDeletions[n] == nil && sealing?.number != n {
            // Only segments whose writes are all synced (not still in a commit).
            if dirty.contains(where: { $0.number == n }) { continue }
            let (ptr, _) = reserve(SpoolRecordFormat.segmentDeletedRecordSize)
            SpoolRecordFormat.encodeSegmentDeleted(number: n, into: ptr)
            liveSet.noteWritten(segment: active.number, bytes: SpoolRecordFormat.segmentDeletedRecordSize)
            pendingDeletions[n] = current?.serial ?? lastIssuedSerial
            requestCommit(urgent: false)
        }
        if compacting == nil, !commitInFlight,
           let n = liveSet.compactionCandidates(threshold: options.compactionThreshold, active: active.number)
               .first(where: { n in !dirty.contains(where: { $0.number == n }) && pendingDeletions[n] == nil }) {
            compact(n)
        }
    }

    /// Rewrites segment `n`'s live messages (with their current states) into
    /// the active segment; once those copies are durable `n` holds nothing live
    /// and is deleted by the next maintenance pass.
    private func compact(_ n: UInt32) {
        compacting = n
        let items = liveSet.liveMessages(inSegment: n)
        var index = 0
        var outstanding = 0
        func finishOne() {
            outstanding -= 1
            if index >= items.count && outstanding == 0 {
                compacting = nil
                maintenanceDue = true
                requestCommit(urgent: false)
            }
        }
        func next() {
            guard index < items.count else { return }
            let (id, entry) = items[index]
            index += 1
            outstanding += 1
            let loc = entry.location
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(loc.recordLength), alignment: 16)
            readBody(at: loc, id: id, into: buf) { [self] result in
                defer { buf.deallocate() }
                guard case .success = result, failure == nil,
                      let live = liveSet.entry(id), live.location == loc,
                      let m = SpoolRecordFormat.decodeMessage(record: UnsafeRawBufferPointer(buf))
                else {
                    if case .failure(let e) = result { report("compaction: \(e)") }
                    finishOne(); next(); return
                }
                let body = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buf)[Int(loc.bodyOffset)...])
                append(id: id, envelope: m.envelope, states: live.states, body: body, place: false) { [self] r in
                    if case .success(let newLoc) = r, let cur = liveSet.entry(id), cur.location == loc {
                        liveSet.place(id, at: newLoc, states: cur.states)
                        stats.messagesCompacted += 1
                    }
                    finishOne()
                }
                next()
            }
        }
        if items.isEmpty { compacting = nil; return }
        next()
    }
}

/// The spool writer on an event loop: the daemon's.
public typealias SpoolWriter<Loop: EventLoop> = SpoolStreamWriter<LoopSpoolIO<Loop>>

extension SpoolStreamWriter {
    /// Opens a writer whose file I/O goes through `loop`.
    public convenience init<Loop: EventLoop>(loop: Loop, directory: String, recovered: SpoolStreamRecovery? = nil,
                                             options: SpoolWriterOptions = SpoolWriterOptions()) throws(SpoolError)
    where IO == LoopSpoolIO<Loop> {
        try self.init(io: LoopSpoolIO(loop: loop), directory: directory, recovered: recovered, options: options)
    }
}
