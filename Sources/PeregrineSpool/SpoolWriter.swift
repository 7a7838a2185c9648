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
    public var commits = 0
    public var segmentsCreated = 0
    public var segmentsDeleted = 0
    public var messagesCompacted = 0
}

/// The append side of one spool stream, owned by one event loop (principle 4:
/// no locks on the write path).
///
/// Records are encoded into pooled buffers and written with `loop.write` at
/// the tracked offset; group commit issues one `fdatasync` for everything
/// written since the previous one, with at most one commit in flight. A
/// message's `durable` callback runs once the fsync covering its last byte has
/// completed: that is what the SMTP `250` waits for. Outcome records ride
/// along with the next commit (or a lazy one after `outcomeFlushDelay`).
///
/// All methods must be called on the loop's thread.
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
public final class SpoolWriter<Loop: EventLoop> {
    public typealias Durable = (Result<MessageLocation, SpoolError>) -> Void

    public let loop: Loop
    public let directory: String
    public let options: SpoolWriterOptions
    /// What is live in this stream (messages, their locations and states).
    public let liveSet: SpoolLiveSet
    public private(set) var stats = SpoolWriterStats()
    /// Set after a write or fsync failed; every later append fails with it.
    public private(set) var failure: SpoolError?

    final class Segment {
        let number: UInt32
        let path: String
        let handle: FileHandle
        /// Where the next record goes.
        var end: Int64 = 0
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
        var done: Durable
    }

    private var active: Segment
    /// Open segment files by number (active and older ones, for reads).
    private var files: [UInt32: FileHandle] = [:]
    private var current: Buffer?
    private var pool: [UnsafeMutableRawBufferPointer] = []
    private var nextSerial: UInt64 = 1
    private var lastIssuedSerial: UInt64 = 0
    private var outstandingWrites: [UInt64] = []
    private var dirty: [Segment] = []

    private var waiters: [Waiter] = []
    private var waiterHead = 0
    private var outcomesUnsynced = false

    private var commitInFlight = false
    private var commitTimer: TimerHandle?
    private var commitTimerUrgent = false
    /// A commit whose fsyncs are done, waiting for writes it covers to complete.
    private var completedCover: UInt64?

    private var maintenanceDue = true
    private var compacting: UInt32?

    private let idHi: UInt64
    private var idCounter: UInt64 = 0

    /// Opens a writer for the stream in `directory`. Pass the stream's recovery
    /// result (its live set carries over); the writer always starts a new segment.
    public init(loop: Loop, directory: String, recovered: SpoolStreamRecovery? = nil,
                options: SpoolWriterOptions = SpoolWriterOptions()) throws(SpoolError) {
        self.loop = loop
        self.directory = directory
        self.options = options
        self.liveSet = recovered?.liveSet ?? SpoolLiveSet()
        try SpoolFiles.makeDirectory(directory)
        let existing = SpoolRecovery.listSegments(directory: directory)
        let first = max(recovered?.nextSegment ?? 1, (existing.last ?? 0) + 1)
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        idHi = UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
        let path = SpoolRecovery.segmentPath(directory: directory, number: first)
        let handle: FileHandle
        do { handle = try loop.openFile(path, create: true, truncate: true) } catch { throw .loop(path: path, error) }
        active = Segment(number: first, path: path, handle: handle)
        files[first] = handle
        liveSet.addSegment(first)
        SpoolFiles.syncDirectory(directory)
        stats.segmentsCreated += 1
        maintain()
    }

    deinit {
        if let c = current, c.pooled { c.memory.deallocate() }
        for b in pool { b.deallocate() }
    }

    public var activeSegment: UInt32 { active.number }
    /// True while a segment's live messages are being rewritten forward.
    public var isCompacting: Bool { compacting != nil }
    /// True when nothing appended is still waiting for its fsync.
    public var isIdle: Bool { !hasWaiters && !commitInFlight && current == nil && dirty.isEmpty }

    private func makeID() -> MessageID {
        idCounter &+= 1
        return MessageID(hi: idHi, lo: (UInt64(options.loopIndex & 0xFF) << 56) | (idCounter & 0x00FF_FFFF_FFFF_FFFF))
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
        if place { liveSet.place(id, at: loc, states: states ?? RecipientStates(count: envelope.recipients.count)) }
        stats.messages += 1
        waiters.append(Waiter(serial: current?.serial ?? lastIssuedSerial, location: loc, done: durable))
        requestCommit(urgent: true)
    }

    /// Records a recipient's final state. Not waited for: it is made durable
    /// with the next commit (a crash before that may cause a duplicate
    /// delivery, never a loss).
    public func recordOutcome(_ id: MessageID, recipient: Int, state: RecipientState) {
        guard failure == nil, state.isFinal else { return }
        let (ptr, _) = reserve(SpoolRecordFormat.outcomeRecordSize)
        SpoolRecordFormat.encodeOutcome(id: id, recipient: recipient, state: state, into: ptr)
        liveSet.noteWritten(segment: active.number, bytes: SpoolRecordFormat.outcomeRecordSize)
        if liveSet.applyOutcome(id, recipient: recipient, state: state, writtenIn: active.number) == 0 {
            maintenanceDue = true
        }
        stats.outcomes += 1
        outcomesUnsynced = true
        requestCommit(urgent: false)
    }

    /// Makes everything appended so far durable now; `done` runs after the fsync.
    public func flush(_ done: @escaping (Result<Void, SpoolError>) -> Void) {
        if let failure { deferCall { done(.failure(failure)) }; return }
        let loc = MessageLocation(segment: active.number, offset: active.end, recordLength: 0, bodyOffset: 0)
        waiters.append(Waiter(serial: current?.serial ?? lastIssuedSerial, location: loc,
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

    private func issueWrite() {
        guard let b = current else { return }
        current = nil
        guard b.used > 0 else { release(b); return }
        lastIssuedSerial = b.serial
        outstandingWrites.append(b.serial)
        if !dirty.contains(where: { $0 === b.segment }) { dirty.append(b.segment) }
        stats.writes += 1
        stats.bytesWritten += Int64(b.used)
        let path = b.segment.path
        loop.write(b.segment.handle, UnsafeRawBufferPointer(rebasing: b.memory[0 ..< b.used]), at: b.fileOffset) {
            [self] result in
            if let i = outstandingWrites.firstIndex(of: b.serial) { outstandingWrites.remove(at: i) }
            release(b)
            if case .failure(let e) = result { fail(.loop(path: path, e)) }
            if let cover = completedCover { finishCommit(cover) }
        }
    }

    private func release(_ b: Buffer) {
        if b.pooled && pool.count < 8 { pool.append(b.memory) } else { b.memory.deallocate() }
    }

    /// Starts the next segment; the old one is fsynced by the next commit.
    private func rollover() -> SpoolError? {
        issueWrite()
        let (n, exhausted) = active.number.addingReportingOverflow(1)
        if exhausted {
            let e = SpoolError.writerFailed("\(directory): segment numbers exhausted")
            fail(e)
            return e
        }
        let path = SpoolRecovery.segmentPath(directory: directory, number: n)
        let handle: FileHandle
        do { handle = try loop.openFile(path, create: true, truncate: true) } catch {
            let e = SpoolError.loop(path: path, error)
            fail(e)
            return e
        }
        SpoolFiles.syncDirectory(directory)
        active = Segment(number: n, path: path, handle: handle)
        files[n] = handle
        liveSet.addSegment(n)
        stats.segmentsCreated += 1
        maintenanceDue = true
        return nil
    }

    // MARK: Group commit

    private var hasWaiters: Bool { waiterHead < waiters.count }

    private func requestCommit(urgent: Bool) {
        if commitInFlight { return }           // its completion looks again
        if let t = commitTimer {
            if urgent && !commitTimerUrgent && options.maxCommitDelay < options.outcomeFlushDelay {
                loop.cancelTimer(t)
            } else { return }
        }
        commitTimerUrgent = urgent
        commitTimer = loop.scheduleTimer(after: urgent ? options.maxCommitDelay : options.outcomeFlushDelay) { [self] in
            commitTimer = nil
            startCommit()
        }
    }

    private func startCommit() {
        guard !commitInFlight, failure == nil else { return }
        issueWrite()
        outcomesUnsynced = false
        let segments = dirty
        dirty = []
        let cover = lastIssuedSerial
        guard !segments.isEmpty else {
            // Nothing new on disk (e.g. only flush() waiters): they are covered already.
            fireWaiters(upTo: cover)
            return
        }
        commitInFlight = true
        stats.commits += 1
        syncSegments(segments[...], cover: cover)
    }

    /// One fdatasync at a time: after a rollover the old segment is synced
    /// first, then the new one, within the same commit.
    private func syncSegments(_ segments: ArraySlice<Segment>, cover: UInt64) {
        guard let s = segments.first else { finishCommit(cover); return }
        stats.fsyncs += 1
        loop.fdatasync(s.handle) { [self] result in
            if case .failure(let e) = result { fail(.loop(path: s.path, e)); finishCommit(cover); return }
            syncSegments(segments.dropFirst(), cover: cover)
        }
    }

    private func finishCommit(_ cover: UInt64) {
        // Every write the fsync covers must have completed (successfully) too.
        if outstandingWrites.contains(where: { $0 <= cover }) { completedCover = cover; return }
        completedCover = nil
        commitInFlight = false
        guard failure == nil else { return }
        fireWaiters(upTo: cover)
        if maintenanceDue { maintain() }
        if hasWaiters { requestCommit(urgent: true) }
        else if outcomesUnsynced || !dirty.isEmpty || (current?.used ?? 0) > 0 { requestCommit(urgent: false) }
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

    private func fail(_ error: SpoolError) {
        guard failure == nil else { return }
        failure = error
        fputs("peregrine spool: \(error); the writer stops accepting messages\n", stderr)
        let pending = waiters[waiterHead...]
        waiters = []
        waiterHead = 0
        for w in pending { w.done(.failure(error)) }
    }

    private func deferCall(_ f: @escaping () -> Void) {
        loop.scheduleTimer(after: 0, f)
    }

    // MARK: Reading bodies back

    /// Reads message `id`'s record into `buffer` (at least `recordLength`
    /// bytes: see `location(of:)`), verifies it, and hands back the body slice.
    public func readBody(_ id: MessageID, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<UnsafeRawBufferPointer, SpoolError>) -> Void) {
        guard let loc = liveSet.entry(id)?.location else { deferCall { done(.failure(.unknownMessage(id))) }; return }
        readBody(at: loc, id: id, into: buffer, done)
    }

    /// The current location of a live message (it changes when compaction moves it).
    public func location(of id: MessageID) -> MessageLocation? { liveSet.entry(id)?.location }

    /// Reads the record at `location` (only after the message was reported durable).
    public func readBody(at loc: MessageLocation, id: MessageID? = nil, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<UnsafeRawBufferPointer, SpoolError>) -> Void) {
        let need = Int(loc.recordLength)
        guard buffer.count >= need else { deferCall { done(.failure(.bufferTooSmall(needed: need))) }; return }
        let path = SpoolRecovery.segmentPath(directory: directory, number: loc.segment)
        let handle: FileHandle
        if let h = files[loc.segment] { handle = h } else {
            do { handle = try loop.openFile(path, create: false, truncate: false) } catch {
                deferCall { done(.failure(.loop(path: path, error))) }
                return
            }
            files[loc.segment] = handle
        }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< need])
        loop.read(handle, into: target, at: loc.offset) { result in
            switch result {
            case .failure(let e): done(.failure(.loop(path: path, e)))
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

    /// Deletes segments nothing needs and starts compacting a sparse one.
    /// Runs after commits when something died; call it to force a pass.
    public func maintain() {
        maintenanceDue = false
        var deleted = false
        defer { if deleted { SpoolFiles.syncDirectory(directory) } }
        for n in liveSet.deletableSegments(active: active.number) where n != compacting {
            // Only segments whose writes are all synced (not still in a commit).
            if dirty.contains(where: { $0.number == n }) { continue }
            let path = SpoolRecovery.segmentPath(directory: directory, number: n)
            if let h = files.removeValue(forKey: n) { loop.closeFile(h) }
            if unlink(path) != 0 && errno != ENOENT {
                fputs("peregrine spool: \(path): unlink failed (errno \(errno))\n", stderr)
            }
            liveSet.removeSegment(n)
            stats.segmentsDeleted += 1
            deleted = true
        }
        if compacting == nil, !commitInFlight,
           let n = liveSet.compactionCandidates(threshold: options.compactionThreshold, active: active.number)
               .first(where: { n in !dirty.contains(where: { $0.number == n }) }) {
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
                      let m = SpoolRecordFormat.decodeMessage(payload: UnsafeRawBufferPointer(
                        rebasing: UnsafeRawBufferPointer(buf)[SpoolRecordFormat.headerSize...]))
                else {
                    if case .failure(let e) = result { fputs("peregrine spool: compaction: \(e)\n", stderr) }
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
