#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineSpool

/// The webhook event log: an append-only directory of segment files
/// (`<spool>/webhook-events/events-<16 hex digits>.log`), written by one
/// dedicated thread with group commit (every event handed over meanwhile is
/// written, then one `fdatasync`), read by the webhook senders up to the
/// durable end only.
///
/// Record: `u32 length | u32 CRC32C(payload) | payload`, little endian;
/// payload: `u64 sequence | i64 time (ms) | u8 type | JSON object`.
/// At start-up the newest segment is checked record by record and cut at the
/// first torn or corrupt record (a crash during a write), then appends go to a
/// new segment, so a segment other than the active one never changes.
/// Segments every webhook's cursor has passed are deleted (`deleteSegments`).
///
/// Durability contract (why the outcome waits): `append(_:then:)` runs `then`
/// on the log thread once the event is on disk; the daemon records a final
/// recipient outcome in the spool only from there. A crash before that loses
/// both (the recipient is delivered again, its event written again: at least
/// once); after it, both survive.
final class WebhookEventLog: @unchecked Sendable {
    struct Position: Hashable, Comparable, Sendable, CustomStringConvertible {
        var segment: UInt64
        var offset: UInt64
        static func < (a: Position, b: Position) -> Bool { (a.segment, a.offset) < (b.segment, b.offset) }
        var description: String { "\(segment):\(offset)" }
    }

    struct Record {
        var sequence: UInt64
        var timeMillis: Int64
        var type: WebhookEventType?
        var json: ArraySlice<UInt8>
        /// Position just after this record (the cursor once it is acknowledged).
        var end: Position
    }

    static let headerBytes = 8
    static let payloadPrefixBytes = 17
    /// Larger lengths are corruption: an event is a few hundred bytes (diagnostics are cut at 2 KiB).
    static let maxPayloadBytes = 1 << 20

    let directory: String
    let segmentBytesLimit: UInt64
    private let cond = NSCondition()
    // Guarded by `cond`:
    private var pending: [(bytes: [UInt8], then: (@Sendable () -> Void)?)] = []
    private var durable: Position
    private var lastSequence: UInt64
    private var stopping = false
    private var stopped = false
    private(set) var writeErrors: UInt64 = 0
    private(set) var eventsWritten: UInt64 = 0
    private var lastError: String?
    /// True from a failed write until the next one succeeds.
    private var failing = false
    /// Events refused because the queue was full while the disk failed.
    private(set) var eventsRefused: UInt64 = 0
    private var refusedSinceLog: UInt64 = 0
    /// While writes fail, at most this many events wait in memory (see `append`).
    let maxPendingWhileFailing: Int
    // Log thread only:
    private var activeFD: Int32
    private let log: @Sendable (String) -> Void

    /// Opens (creating) the directory, repairs the newest segment and starts a new one.
    init(directory: String, segmentBytesLimit: UInt64 = 16 << 20, maxPendingWhileFailing: Int = 100_000,
         log: @escaping @Sendable (String) -> Void) throws {
        self.directory = directory
        self.segmentBytesLimit = segmentBytesLimit
        self.maxPendingWhileFailing = maxPendingWhileFailing
        self.log = log
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let existing = Self.segmentNumbers(in: directory)
        var lastSeq: UInt64 = 0
        if let newest = existing.last {
            let path = Self.path(directory, newest)
            let (validEnd, seq, fileSize) = Self.scan(path: path)
            if validEnd < fileSize {
                log("webhook event log: \(path): cut at byte \(validEnd) of \(fileSize) (torn or corrupt tail after a crash)")
                let fd = open(path, O_WRONLY)
                if fd >= 0 { _ = ftruncate(fd, off_t(validEnd)); _ = fsync(fd); close(fd) }
            }
            lastSeq = seq
            // The newest segment may be empty (just rolled, or started by a run that wrote nothing):
            // the sequence goes on from the last record of an older one.
            for older in existing.dropLast().reversed() where lastSeq == 0 {
                lastSeq = Self.scan(path: Self.path(directory, older)).1
            }
        }
        let next = (existing.last ?? 0) + 1
        let path = Self.path(directory, next)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IOError(.errno(errno), "open \(path)") }
        activeFD = fd
        Self.syncDirectory(directory)
        durable = Position(segment: next, offset: 0)
        lastSequence = lastSeq
        let t = Thread { [self] in self.run() }
        t.name = "peregrine-webhook-log"
        t.start()
    }

    static func path(_ directory: String, _ n: UInt64) -> String {
        let hex = String(n, radix: 16)
        return directory + "/events-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".log"
    }

    static func segmentNumbers(in directory: String) -> [UInt64] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> UInt64? in
            guard name.hasPrefix("events-"), name.hasSuffix(".log"), name.count == 7 + 16 + 4 else { return nil }
            return UInt64(name.dropFirst(7).dropLast(4), radix: 16)
        }.sorted()
    }

    static func syncDirectory(_ directory: String) {
        let d = open(directory, O_RDONLY | O_DIRECTORY)
        if d >= 0 { _ = fsync(d); close(d) }
    }

    /// The end of the last valid record, the last sequence number, the file size.
    static func scan(path: String) -> (UInt64, UInt64, UInt64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return (0, 0, 0) }
        defer { close(fd) }
        var st = stat()
        _ = fstat(fd, &st)
        let size = UInt64(st.st_size)
        var offset: UInt64 = 0, seq: UInt64 = 0
        var buffer: [UInt8] = []
        while true {
            guard let r = readRecord(fd: fd, at: offset, limit: size, buffer: &buffer) else { break }
            seq = r.sequence
            offset = r.endOffset
        }
        return (offset, seq, size)
    }

    /// Reads and checks one record at `offset`; nil at the end, or at a torn or corrupt record.
    static func readRecord(fd: Int32, at offset: UInt64, limit: UInt64, buffer: inout [UInt8])
        -> (sequence: UInt64, timeMillis: Int64, type: UInt8, json: ArraySlice<UInt8>, endOffset: UInt64)? {
        guard offset + UInt64(headerBytes) <= limit else { return nil }
        var header = [UInt8](repeating: 0, count: headerBytes)
        let got = header.withUnsafeMutableBytes { (try? Posix.preadFull(fd, $0, at: Int64(offset))) ?? 0 }
        guard got == headerBytes else { return nil }
        let length = Int(le32(header, 0)), crc = le32(header, 4)
        guard length >= payloadPrefixBytes, length <= maxPayloadBytes,
              offset + UInt64(headerBytes + length) <= limit else { return nil }
        if buffer.count < length { buffer = [UInt8](repeating: 0, count: length) }
        let n = buffer.withUnsafeMutableBytes {
            (try? Posix.preadFull(fd, UnsafeMutableRawBufferPointer(rebasing: $0[0..<length]), at: Int64(offset) + Int64(headerBytes))) ?? 0
        }
        guard n == length else { return nil }
        guard buffer.withUnsafeBytes({ CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }) == crc else { return nil }
        let seq = le64(buffer, 0)
        let time = Int64(bitPattern: le64(buffer, 8))
        return (seq, time, buffer[16], buffer[payloadPrefixBytes..<length], offset + UInt64(headerBytes + length))
    }

    static func le32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }
    static func le64(_ b: [UInt8], _ i: Int) -> UInt64 {
        UInt64(le32(b, i)) | UInt64(le32(b, i + 4)) << 32
    }
    static func putLE(_ v: UInt64, bytes: Int, into out: inout [UInt8]) {
        for i in 0..<bytes { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    // MARK: Appending (any thread)

    /// Hands `event` to the log thread; `then` runs on that thread once it is durable.
    ///
    /// While the disk keeps failing the hand-over queue is bounded
    /// (`maxPendingWhileFailing`, about 300 bytes an event): an event over it
    /// is refused and its `then` never runs. The producer, a delivery loop,
    /// is never blocked; the refused outcome is simply not recorded in the
    /// spool, exactly as at a shutdown with the disk failing: the recipient
    /// stays pending there and is delivered again after the next start (a
    /// duplicate, never an outcome without its event). Refusals are counted
    /// (`status`, /metrics) and logged once a minute, never silent.
    func append(_ event: WebhookEvent, then: (@Sendable () -> Void)? = nil) {
        var payload: [UInt8] = []
        let json = event.json
        payload.reserveCapacity(Self.payloadPrefixBytes + json.count)
        payload += [UInt8](repeating: 0, count: 8)  // sequence: assigned on the log thread, in write order
        Self.putLE(UInt64(bitPattern: event.timeMillis), bytes: 8, into: &payload)
        payload.append(event.type.rawValue)
        payload += json
        cond.lock()
        if stopped {
            cond.unlock()
            log("webhook event log: stopped; event \(event.id) not written (its outcome is not recorded either)")
            return
        }
        if failing && pending.count >= maxPendingWhileFailing {
            eventsRefused += 1
            refusedSinceLog += 1
            cond.unlock()
            return
        }
        pending.append((payload, then))
        // broadcast, not signal: senders wait on this condition too (waitForData), and a
        // signal that woke one of them instead of the log thread left the event pending
        // until the next append — its delivery's outcome waited with it (seen as webhook
        // tests that got no event for a minute).
        cond.broadcast()
        cond.unlock()
    }

    /// Runs `then` on the log thread once every event appended before it is durable (writes nothing).
    func afterDurable(_ then: @escaping @Sendable () -> Void) {
        cond.lock()
        if stopped { cond.unlock(); return }
        pending.append(([], then))
        cond.broadcast()  // as in append: the log thread must be the one woken
        cond.unlock()
    }

    /// The durable end and the last sequence number written.
    var durableEnd: (Position, UInt64) { cond.lock(); defer { cond.unlock() }; return (durable, lastSequence) }

    var status: (written: UInt64, errors: UInt64, lastError: String?) {
        cond.lock(); defer { cond.unlock() }
        return (eventsWritten, writeErrors, lastError)
    }

    /// Events waiting to be written, and events refused so far (queue full while the disk failed).
    var backlog: (pending: Int, refused: UInt64) {
        cond.lock(); defer { cond.unlock() }
        return (pending.count, eventsRefused)
    }

    /// Blocks until the durable end passes `position` or `deadline` (monotonic ns) comes; returns the durable end.
    func waitForData(after position: Position, deadline: UInt64) -> Position {
        cond.lock(); defer { cond.unlock() }
        while durable <= position && !stopping {
            let now = monotonicNanoseconds()
            if now >= deadline { break }
            _ = cond.wait(until: Date(timeIntervalSinceNow: Double(deadline - now) / 1e9))
        }
        return durable
    }

    /// Wakes every sender waiting in `waitForData` (shutdown).
    func wakeAll() { cond.lock(); cond.broadcast(); cond.unlock() }

    /// Writes what is pending, then stops the thread (shutdown; appends after this are refused and logged).
    func stop() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while !stopped { cond.wait() }
        cond.unlock()
    }

    // MARK: The log thread

    private func run() {
        var nextRetryLog: UInt64 = 0
        while true {
            cond.lock()
            while pending.isEmpty && !stopping { cond.wait() }
            if pending.isEmpty && stopping {
                stopped = true
                cond.broadcast()
                cond.unlock()
                close(activeFD)
                return
            }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            var seq = lastSequence
            var position = durable
            cond.unlock()

            var bytes: [UInt8] = []
            for var item in batch where !item.bytes.isEmpty {
                seq += 1
                for i in 0..<8 { item.bytes[i] = UInt8(truncatingIfNeeded: seq >> (8 * UInt64(i))) }
                Self.putLE(UInt64(item.bytes.count), bytes: 4, into: &bytes)
                let crc = item.bytes.withUnsafeBytes { CRC32C.checksum($0) }
                Self.putLE(UInt64(crc), bytes: 4, into: &bytes)
                bytes += item.bytes
            }
            var error: IOError?
            if !bytes.isEmpty {
                var written = 0
                let fd = activeFD, offset = Int64(position.offset)
                error = bytes.withUnsafeBytes { Posix.writeAll(fd, $0, at: offset, written: &written) }
                if error == nil && fdatasync(fd) != 0 { error = IOError(.errno(errno), "fdatasync") }
            }
            if let error {
                // Nothing of the batch counts as written: it is retried whole at
                // the same offset (the outcomes wait; memory grows only by what
                // the delivery loops produce meanwhile). Logged once a minute.
                cond.lock()
                writeErrors += 1
                lastError = "\(error)"
                failing = true
                pending.insert(contentsOf: batch, at: 0)
                let stop = stopping
                let refused = refusedSinceLog
                cond.unlock()
                let now = monotonicNanoseconds()
                if now >= nextRetryLog {
                    log("webhook event log: writing \(batch.count) event(s) to \(Self.path(directory, position.segment)) failed: "
                        + "\(error); retrying every second (their outcomes are recorded once written)"
                        + (refused > 0 ? "; \(refused) event(s) refused with the queue full at \(maxPendingWhileFailing): "
                           + "their outcomes are not recorded, so those recipients are delivered again after a restart" : ""))
                    cond.lock(); refusedSinceLog -= refused; cond.unlock()
                    nextRetryLog = now + 60_000_000_000
                }
                if stop {
                    // Shutdown: the outcomes stay unrecorded, so those recipients are delivered again after the restart.
                    cond.lock(); pending.removeAll(); cond.unlock()
                    continue
                }
                usleep(1_000_000)
                continue
            }
            position.offset += UInt64(bytes.count)
            cond.lock()
            failing = false
            lastSequence = seq
            durable = position
            eventsWritten += UInt64(batch.lazy.filter { !$0.bytes.isEmpty }.count)
            cond.broadcast()
            cond.unlock()
            for item in batch { item.then?() }
            if position.offset >= segmentBytesLimit { roll(from: position) }
        }
    }

    /// Starts the next segment (the full one never changes again).
    private func roll(from position: Position) {
        let next = position.segment + 1
        let path = Self.path(directory, next)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            log("webhook event log: cannot start \(path): \(String(cString: strerror(errno))); the current segment grows on")
            return
        }
        Self.syncDirectory(directory)
        close(activeFD)
        activeFD = fd
        cond.lock()
        durable = Position(segment: next, offset: 0)
        cond.broadcast()
        cond.unlock()
    }

    /// Deletes every segment numbered below `segment` (never the active one).
    func deleteSegments(below segment: UInt64) {
        let active = durableEnd.0.segment
        for n in Self.segmentNumbers(in: directory) where n < segment && n < active {
            unlink(Self.path(directory, n))
        }
    }

    /// The oldest segment still on disk (where a webhook without a cursor starts).
    var oldestSegment: UInt64 { Self.segmentNumbers(in: directory).first ?? durableEnd.0.segment }

    /// Segment count and bytes on disk (metrics).
    var diskUsage: (segments: Int, bytes: UInt64) {
        var bytes: UInt64 = 0
        let numbers = Self.segmentNumbers(in: directory)
        for n in numbers {
            var st = stat()
            if stat(Self.path(directory, n), &st) == 0 { bytes += UInt64(st.st_size) }
        }
        return (numbers.count, bytes)
    }
}

/// Reads the log for one sender: records from a position up to the durable end.
final class WebhookEventLogReader {
    let log: WebhookEventLog
    private var fd: Int32 = -1
    private var fdSegment: UInt64 = 0
    private var buffer: [UInt8] = []

    init(log: WebhookEventLog) { self.log = log }
    deinit { if fd >= 0 { close(fd) } }

    /// The next record at or after `position`, up to `durableEnd`; moves to
    /// the next segment at a segment's end. Returns nil when nothing durable
    /// follows; `position` is then where to wait from.
    func next(_ position: inout WebhookEventLog.Position, durableEnd: WebhookEventLog.Position) -> WebhookEventLog.Record? {
        while position < durableEnd {
            if position.segment < durableEnd.segment {
                // A finished segment: read to its end, then go on with the next one on disk.
                guard openSegment(position.segment) else {
                    position = WebhookEventLog.Position(segment: nextSegment(after: position.segment, durableEnd), offset: 0)
                    continue
                }
                var st = stat()
                _ = fstat(fd, &st)
                if let r = WebhookEventLog.readRecord(fd: fd, at: position.offset, limit: UInt64(st.st_size), buffer: &buffer) {
                    position.offset = r.endOffset
                    return Record(r, position)
                }
                if position.offset < UInt64(st.st_size) {
                    log.logLine("webhook event log: \(WebhookEventLog.path(log.directory, position.segment)): unreadable record at "
                                + "byte \(position.offset); the rest of that segment is skipped")
                }
                position = WebhookEventLog.Position(segment: nextSegment(after: position.segment, durableEnd), offset: 0)
                continue
            }
            guard openSegment(position.segment),
                  let r = WebhookEventLog.readRecord(fd: fd, at: position.offset, limit: durableEnd.offset, buffer: &buffer) else {
                return nil
            }
            position.offset = r.endOffset
            return Record(r, position)
        }
        return nil
    }

    private func Record(_ r: (sequence: UInt64, timeMillis: Int64, type: UInt8, json: ArraySlice<UInt8>, endOffset: UInt64),
                        _ end: WebhookEventLog.Position) -> WebhookEventLog.Record {
        WebhookEventLog.Record(sequence: r.sequence, timeMillis: r.timeMillis, type: WebhookEventType(rawValue: r.type),
                               json: r.json, end: end)
    }

    private func nextSegment(after n: UInt64, _ durableEnd: WebhookEventLog.Position) -> UInt64 {
        WebhookEventLog.segmentNumbers(in: log.directory).first { $0 > n } ?? durableEnd.segment
    }

    private func openSegment(_ n: UInt64) -> Bool {
        if fd >= 0 && fdSegment == n { return true }
        if fd >= 0 { close(fd); fd = -1 }
        fd = open(WebhookEventLog.path(log.directory, n), O_RDONLY | O_CLOEXEC)
        fdSegment = n
        return fd >= 0
    }
}

extension WebhookEventLog {
    func logLine(_ s: String) { log(s) }
}
