#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import PeregrineIO

/// What one `<acct-file PATH>` block asks for.
public struct AccountingFileOptions: Hashable, Sendable {
    public var path: String
    /// Record types written to this file (`records d,b`); nil means every type.
    public var records: Set<AccountingRecordType>?
    /// `max-size`: rotate before a record would make the file larger than this many bytes.
    public var maxSize: Int64?
    /// `move-interval`: rotate at every multiple of this many seconds of UTC wall time
    /// (an hourly interval rotates on the hour).
    public var moveInterval: Int64?
    /// Buffered bytes that trigger a write without waiting for the periodic flush.
    public var flushThreshold: Int
    /// `record-fields TYPE f1,f2,…`: the fields written for a record type, in
    /// order (`type` always comes first); a type not named gets every field.
    public var recordFields: [AccountingRecordType: [String]] = [:]
    /// `delete-after DURATION`: rotated files older than this many seconds are
    /// deleted (at start-up and after each rotation); nil keeps them.
    public var deleteAfter: Int64?
    /// `<acct-file |/path/to/program>`: bytes kept for the program while it
    /// does not read (or is being restarted); beyond it whole lines are dropped and counted.
    public var maxPipeBuffered = 8 << 20
    /// `world-readable`: mode 0644 (the default, as before this option) or, with `no`, 0640.
    public var worldReadable = true

    /// The program of `<acct-file |PROGRAM>`, or nil for a file.
    public var pipeProgram: String? {
        path.hasPrefix("|") ? String(path.dropFirst().drop { $0 == " " }) : nil
    }

    public init(path: String, records: Set<AccountingRecordType>? = nil, maxSize: Int64? = nil,
                moveInterval: Int64? = nil, flushThreshold: Int = 64 * 1024) {
        self.path = path; self.records = records; self.maxSize = maxSize
        self.moveInterval = moveInterval; self.flushThreshold = flushThreshold
    }
}

/// Appends accounting records to one CSV file, with a record-type filter and
/// rotation by size and by interval.
///
/// Records are encoded straight into a byte buffer (no per-record Foundation
/// objects). The buffer is written with plain `write(2)` (O_APPEND) when it
/// passes `flushThreshold`, on every `flush()` (the daemon calls it from a
/// ~100 ms loop timer, see `startPeriodicFlush(on:every:)`), on rotation and on
/// `close()`. Those writes are synchronous on the calling loop thread: they go
/// to the page cache (no fsync), a few microseconds per 64 KiB; that is the
/// documented trade-off instead of routing accounting through the spool's file ops.
/// Accounting lines written this way survive a daemon crash up to the last flush.
///
/// Thread-safe: every method may be called from any loop thread (one
/// uncontended lock per record); one writer per file serves every loop.
///
/// Rotation renames the current file to `STEM-YYYYMMDD-HHMMSS.EXT` (UTC,
/// `-N` appended on a clash) next to it, and starts a new file with the header.
/// A file that already exists at start-up is appended to (no second header).
public final class AccountingWriter: @unchecked Sendable {
    public let options: AccountingFileOptions
    /// Wall-clock seconds since the epoch; injected by tests.
    private let wallClock: @Sendable () -> Int64
    private let state: Mutex<State>
    private let filter: UInt16

    /// Called (on the flushing thread) when a write, rename or open fails.
    /// The bytes stay buffered and are retried on the next flush.
    public var onError: (@Sendable (AccountingError) -> Void)?

    /// The real clock: `CLOCK_REALTIME` seconds.
    public static let systemWallClock: @Sendable () -> Int64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }

    public init(options: AccountingFileOptions,
                wallClock: @escaping @Sendable () -> Int64 = AccountingWriter.systemWallClock) throws(AccountingError) {
        self.options = options
        self.wallClock = wallClock
        var mask: UInt16 = 0
        for t in options.records ?? Set(AccountingRecordType.allCases) { mask |= AccountingWriter.bit(t) }
        self.filter = mask
        var s = State(options: options)
        try s.openCurrent(now: wallClock())
        self.state = Mutex(s)
    }

    deinit {
        state.withLock { s in
            _ = s.writeBuffer()
            s.closeFD()
        }
    }

    @inline(__always)
    static func bit(_ t: AccountingRecordType) -> UInt16 {
        switch t {
        case .received: return 1
        case .delivered: return 2
        case .bounced: return 4
        case .transient: return 8
        case .transientQueue: return 16
        case .feedbackLoop: return 32
        case .remoteBounce: return 64
        case .suppressed: return 128
        case .webhookUndeliverable: return 256
        }
    }

    /// Whether this file takes records of type `t`.
    @inline(__always)
    public func accepts(_ t: AccountingRecordType) -> Bool { filter & AccountingWriter.bit(t) != 0 }

    /// Buffers `record` if the file takes its type. Rotates first when the
    /// interval has passed or the record would push the file past `max-size`.
    /// The line is encoded under the lock into a scratch buffer the writer
    /// owns (no allocation per record), then copied to the write buffer.
    public func append<R: AccountingRecordEncodable>(_ record: R) {
        let type = record.accountingType
        guard accepts(type) else { return }
        let now = wallClock()
        let err: AccountingError? = state.withLock { s in
            s.line.reset()
            record.encodeCSV(into: &s.line)
            if !s.columns.isFull {
                // record-fields: only this file's columns.
                let full = s.line.bytes
                s.line.reset()
                s.columns.project(full, type: type, into: &s.line.bytes, starts: &s.fieldStarts)
            }
            var failure = s.rotateIfDue(now: now, adding: s.line.bytes.count)
            s.buffer.append(contentsOf: s.line.bytes)
            if s.buffer.count >= s.options.flushThreshold, let e = s.writeBuffer() { failure = e }
            return failure
        }
        if let err { onError?(err) }
    }

    /// Buffers an already encoded CSV line (from `AccountingRecord.appendCSV`) of type `type`.
    public func appendEncoded(_ line: [UInt8], type: AccountingRecordType) {
        guard accepts(type) else { return }
        let now = wallClock()
        let err: AccountingError? = state.withLock { s in
            var line = line
            if !s.columns.isFull {
                var projected: [UInt8] = []
                s.columns.project(line, type: type, into: &projected, starts: &s.fieldStarts)
                line = projected
            }
            var failure = s.rotateIfDue(now: now, adding: line.count)
            s.buffer.append(contentsOf: line)
            if s.buffer.count >= s.options.flushThreshold, let e = s.writeBuffer() { failure = e }
            return failure
        }
        if let err { onError?(err) }
    }

    /// Writes the buffered bytes; rotates first if the interval has passed.
    @discardableResult
    public func flush() -> AccountingError? {
        let now = wallClock()
        let err: AccountingError? = state.withLock { s in
            if let e = s.rotateIfDue(now: now, adding: 0) { return e }
            return s.writeBuffer()
        }
        if let err { onError?(err) }
        return err
    }

    /// Writes the buffered bytes and fsyncs the file (and, once per file, its
    /// directory, so a file this writer created is found after a power
    /// loss): when it returns nil, every record appended before the call is
    /// durable. For what must survive a power loss before a peer hears 250
    /// (an inbound report that exists nowhere else); blocking, so callers run
    /// it off the event loops. The fsync runs on a duplicate of the descriptor
    /// outside the lock: loops appending records never wait for the disk.
    /// A `|PROGRAM` file has nothing to sync (the program owns durability).
    @discardableResult
    public func sync() -> AccountingError? {
        let now = wallClock()
        let (fd, syncDirectory, err): (Int32, Bool, AccountingError?) = state.withLock { s in
            if let e = s.rotateIfDue(now: now, adding: 0) ?? s.writeBuffer() { return (-1, false, e) }
            guard s.pipe == nil, s.fd >= 0 else { return (-1, false, nil) }
            let first = !s.directorySynced
            s.directorySynced = true
            return (dup(s.fd), first, nil)
        }
        if let err { onError?(err); return err }
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var failure: AccountingError?
        if Glibc.fsync(fd) != 0 {
            failure = .io(path: options.path, operation: "fsync", errno: errno)
        } else if syncDirectory {
            let dir = options.path.lastIndex(of: "/").map { String(options.path[..<$0]) } ?? "."
            let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd < 0 || Glibc.fsync(dfd) != 0 {
                failure = .io(path: dir, operation: "fsync (directory)", errno: errno)
            }
            if dfd >= 0 { Glibc.close(dfd) }
        }
        if let failure {
            state.withLock { s in s.directorySynced = false }
            onError?(failure)
        }
        return failure
    }

    /// Rotates now, whatever the size and interval (for `reload` or an operator action).
    @discardableResult
    public func rotate() -> AccountingError? {
        let now = wallClock()
        let err = state.withLock { s in s.rotate(now: now) }
        if let err { onError?(err) }
        return err
    }

    /// Flushes and closes the file. Later appends are dropped.
    @discardableResult
    public func close() -> AccountingError? {
        stopPeriodicFlush()
        let err: AccountingError? = state.withLock { s in
            let e = s.writeBuffer()
            s.closeFD()
            s.closed = true
            return e
        }
        if let err { onError?(err) }
        return err
    }

    /// Bytes in the current file (header included) plus those still buffered.
    public var currentSize: Int64 { state.withLock { s in s.fileSize + Int64(s.buffer.count) } }
    /// Paths this writer has rotated files to, oldest first.
    public var rotatedPaths: [String] { state.withLock { s in s.rotated } }
    /// Bytes dropped because the buffer could not be written for too long.
    public var droppedBytes: Int64 { state.withLock { s in s.dropped } }

    // MARK: Periodic flush on a loop

    private let timerCancel = Mutex<(@Sendable () -> Void)?>(nil)

    /// Flushes every `interval` nanoseconds on `loop` (call on the loop's thread)
    /// until `close()` or `stopPeriodicFlush()`.
    public func startPeriodicFlush<L: EventLoop>(on loop: L, every interval: UInt64 = 100_000_000) {
        let ticker = AccountingFlushTicker(writer: self, loop: loop, interval: interval)
        let previous = timerCancel.withLock { c in
            let p = c
            c = { loop.execute { ticker.cancel() } }
            return p
        }
        previous?()
        ticker.arm()
    }

    /// Stops the periodic flush (the timer is cancelled on its loop, asynchronously).
    public func stopPeriodicFlush() {
        let c = timerCancel.withLock { c in
            let p = c
            c = nil
            return p
        }
        c?()
    }

    // MARK: State (guarded by the mutex)

    struct State {
        let options: AccountingFileOptions
        var fd: Int32 = -1
        var fileSize: Int64 = 0
        var buffer: [UInt8] = []
        /// Scratch for the record being encoded (and its timestamp cache).
        var line = AccountingLineEncoder()
        var headerSize: Int64
        var nextIntervalRotation: Int64?
        var rotated: [String] = []
        var closed = false
        var dropped: Int64 = 0
        /// Whether the current file's directory entry was fsynced (`sync()`); a rotation makes a new one.
        var directorySynced = false
        /// Cap on bytes kept while the disk refuses writes (then the oldest are dropped and counted).
        static let maxBuffered = 64 << 20
        /// The file's columns (`record-fields`), and scratch for projecting a line onto them.
        let columns: AccountingColumns
        var fieldStarts: [Int] = []
        /// `<acct-file |PROGRAM>`: the program reading the records (AccountingWriter+Pipe.swift).
        var pipe: AccountingPipe?

        init(options: AccountingFileOptions) {
            self.options = options
            self.columns = AccountingColumns(records: options.records, recordFields: options.recordFields)
            self.headerSize = Int64(columns.header.count)
            buffer.reserveCapacity(options.flushThreshold + 4096)
            if let program = options.pipeProgram { pipe = AccountingPipe(program: program) }
        }

        mutating func openCurrent(now: Int64) throws(AccountingError) {
            if pipe != nil { return try openPipe(now: now) }
            (fd, fileSize) = try RotatedFiles.openForAppend(options.path, worldReadable: options.worldReadable)
            directorySynced = false
            if fileSize == 0 {
                let header = columns.header
                if let e = writeAll(header) { throw e }
            }
            scheduleInterval(now: now)
            pruneRotated(now: now)
        }

        /// `delete-after`: rotated files older than that go.
        mutating func pruneRotated(now: Int64) {
            guard let age = options.deleteAfter else { return }
            RotatedFiles.prune(for: options.path, now: now, maxAgeSeconds: age, keep: nil)
        }

        mutating func scheduleInterval(now: Int64) {
            nextIntervalRotation = RotatedFiles.nextIntervalRotation(after: now, interval: options.moveInterval)
        }

        /// Rotates when the interval has passed (and the file holds records;
        /// an empty file just moves on to the next interval) or when `count`
        /// more bytes would push a file holding records past `max-size`.
        mutating func rotateIfDue(now: Int64, adding count: Int) -> AccountingError? {
            guard !closed, pipe == nil else { return nil }
            let pending = fileSize + Int64(buffer.count)
            if let next = nextIntervalRotation, now >= next {
                if pending > headerSize { return rotate(now: now) }
                scheduleInterval(now: now)
            }
            if let max = options.maxSize, pending > headerSize, pending + Int64(count) > max {
                return rotate(now: now)
            }
            return nil
        }

        mutating func rotate(now: Int64) -> AccountingError? {
            guard !closed, pipe == nil else { return nil }
            if let e = writeBuffer() { return e }
            closeFD()
            let target = rotatedName(now: now)
            var failure: AccountingError? = nil
            if rename(options.path, target) == 0 {
                rotated.append(target)
            } else {
                failure = .io(path: options.path, operation: "rename to \(target)", errno: errno)
            }
            do throws(AccountingError) {
                try openCurrent(now: now)
            } catch {
                failure = error
            }
            return failure
        }

        func rotatedName(now: Int64) -> String { RotatedFiles.name(for: options.path, now: now) }

        mutating func writeBuffer() -> AccountingError? {
            if pipe != nil { return writePipe() }
            guard !buffer.isEmpty else { return nil }
            guard fd >= 0 else {
                if closed { buffer.removeAll(); return nil }
                return .io(path: options.path, operation: "write (file not open)", errno: EBADF)
            }
            let bytes = buffer
            if let e = writeAll(bytes) {
                if buffer.count > State.maxBuffered {
                    let drop = buffer.count - State.maxBuffered
                    buffer.removeFirst(drop)
                    dropped += Int64(drop)
                }
                return e
            }
            buffer.removeAll(keepingCapacity: true)
            return nil
        }

        /// write(2) until everything is written. On failure the file may hold a
        /// prefix of `bytes`; the caller keeps them buffered (a retry may duplicate
        /// a partial line, which the reader reports rather than misreads).
        mutating func writeAll(_ bytes: [UInt8]) -> AccountingError? {
            var written = 0
            let error = bytes.withUnsafeBytes { Posix.writeAll(fd, $0, written: &written) }
            fileSize += Int64(written)
            return error.map { .io(path: options.path, operation: "write", errno: $0.errnoValue ?? EIO) }
        }

        mutating func closeFD() {
            if pipe != nil { closePipe(); return }
            if fd >= 0 { Glibc.close(fd); fd = -1 }
        }
    }
}

/// Fans records out to every `<acct-file>` whose filter takes them. Thread-safe like its writers.
public final class AccountingLog: @unchecked Sendable {
    public let writers: [AccountingWriter]

    public init(writers: [AccountingWriter]) { self.writers = writers }

    /// Whether any file takes records of type `t` (callers skip building records nobody writes).
    public func accepts(_ t: AccountingRecordType) -> Bool { writers.contains { $0.accepts(t) } }

    /// Hands `record` to every writer whose filter takes it; each encodes it
    /// into its own buffer (cheap now that encoding is byte copies).
    public func log<R: AccountingRecordEncodable>(_ record: R) {
        for w in writers { w.append(record) }
    }

    /// Flushes every writer; returns the errors (empty when all went well).
    @discardableResult
    public func flush() -> [AccountingError] { writers.compactMap { $0.flush() } }

    /// Makes every record of these types appended so far durable (`AccountingWriter.sync()`
    /// on each file that takes one of them); blocking. Returns the errors.
    public func sync(_ types: [AccountingRecordType]) -> [AccountingError] {
        writers.filter { w in types.contains { w.accepts($0) } }.compactMap { $0.sync() }
    }

    /// Flushes and closes every writer (shutdown).
    @discardableResult
    public func close() -> [AccountingError] { writers.compactMap { $0.close() } }

    public func startPeriodicFlush<L: EventLoop>(on loop: L, every interval: UInt64 = 100_000_000) {
        for w in writers { w.startPeriodicFlush(on: loop, every: interval) }
    }
}

final class AccountingFlushTicker<L: EventLoop>: @unchecked Sendable {
    weak var writer: AccountingWriter?
    let loop: L
    let interval: UInt64
    var handle: TimerHandle?
    var stopped = false
    init(writer: AccountingWriter, loop: L, interval: UInt64) {
        self.writer = writer; self.loop = loop; self.interval = interval
    }
    func arm() {
        guard !stopped else { return }
        handle = loop.scheduleTimer(after: interval) { [self] in
            guard let w = writer, !stopped else { return }
            w.flush()
            arm()
        }
    }
    func cancel() {
        // Runs on the loop thread (see stopPeriodicFlush).
        stopped = true
        if let h = handle { loop.cancelTimer(h) }
    }
}
