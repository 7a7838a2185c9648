#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import PeregrineIO

/// The global suppression list: addresses and whole domains that are never
/// mailed. In memory a `SuppressionTable` of digests (O(1) per recipient,
/// no String per entry); on disk a `SuppressionLog` in the spool directory.
///
/// Changes apply to the table at once (the next RCPT sees them) and are
/// appended to the log by one writer thread in group commits: every change
/// queued while a write and fsync run goes into the next one. A change's
/// `durable` callback runs (on that thread) after the fsync that covers it,
/// so whoever acknowledges an add after it (the management API) never loses
/// it to a crash. When more than half the log's records are dead (removed or
/// superseded) and there are more than `compactionMinimum`, the writer
/// rewrites it with the live entries only (temp file, fsync, rename).
///
/// Thread-safe: one lock over the table and the pending records, held for a
/// lookup or an append to memory, never across I/O.
package final class SuppressionList: @unchecked Sendable {
    package let path: String
    private let lock = Locked<Void>()
    private let table: SuppressionTable
    private var pending: [UInt8] = []
    private var pendingRecords = 0
    private var pendingCallbacks: [(IOError?) -> Void] = []
    private var flushScheduled = false
    /// Only on `queue`.
    private var fd: Int32
    private var fileRecords: Int
    private let queue = DispatchQueue(label: "peregrine.suppression")
    /// Write or compaction failures and compactions, for the daemon's log.
    package var report: @Sendable (String) -> Void = { _ in }
    /// Logs with fewer records are never compacted.
    package var compactionMinimum = 4096
    package private(set) var compactions = 0

    /// What `open` found in the file.
    package struct LoadReport {
        package var records: Int
        package var entries: Int
        package var damagedBytes: Int64
        package var damage: String?
        package var seconds: Double
    }

    private init(path: String, fd: Int32, table: SuppressionTable, fileRecords: Int) {
        self.path = path; self.fd = fd; self.table = table; self.fileRecords = fileRecords
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Opens (or creates) the log at `path` and loads it. A damaged tail is
    /// cut off (the report says how many bytes and why); a file that is not
    /// a suppression log is an error.
    package static func open(path: String, expectedEntries: Int = 0) throws -> (SuppressionList, LoadReport) {
        let started = monotonicNanoseconds()
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw IOError.lastErrno("open \(path)") }
        // Sized from the file (a record is 18 bytes plus its text, some 30-40): no rehash while loading.
        var st = stat()
        let estimate = fstat(fd, &st) == 0 ? Int(st.st_size) / 48 : 0
        let table = SuppressionTable(minimumCapacity: max(1024, expectedEntries, estimate))
        let scan: SuppressionLog.ScanResult
        do {
            scan = try SuppressionLog.scan(fd: fd) { record in
                let digest = SuppressionKey.digest(record.text)
                switch record.op {
                case .add: table.insert(digest, reason: record.reason)
                case .remove: table.remove(digest)
                }
            }
            if scan.validEnd < Int64(SuppressionLog.headerBytes) {
                // New (or shorter than its header): start it afresh.
                guard ftruncate(fd, 0) == 0 else { throw IOError.lastErrno("ftruncate \(path)") }
                try SuppressionLog.magic.withUnsafeBytes { (b) throws in try Posix.writeAll(fd, b, at: 0) }
                guard fsync(fd) == 0 else { throw IOError.lastErrno("fsync \(path)") }
                try syncDirectory(of: path)
            } else if scan.damagedBytes > 0 {
                guard ftruncate(fd, off_t(scan.validEnd)) == 0 else { throw IOError.lastErrno("ftruncate \(path)") }
                guard fsync(fd) == 0 else { throw IOError.lastErrno("fsync \(path)") }
            }
            guard lseek(fd, 0, SEEK_END) >= 0 else { throw IOError.lastErrno("lseek \(path)") }
        } catch {
            close(fd)
            throw error
        }
        let list = SuppressionList(path: path, fd: fd, table: table, fileRecords: scan.records)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        return (list, LoadReport(records: scan.records, entries: table.count, damagedBytes: scan.damagedBytes,
                                 damage: scan.damage, seconds: seconds))
    }

    /// Entries on the list.
    package var count: Int { lock.withLock { table.count } }
    /// Bytes of the in-memory table.
    package var memoryBytes: Int { lock.withLock { table.memoryBytes } }

    /// Why the recipient `address` (as given at RCPT) is suppressed, by its
    /// own entry or its domain's; nil when it is not.
    @inline(__always)
    package func reason(forRecipient address: UnsafeRawBufferPointer) -> SuppressionReason? {
        guard let d = SuppressionKey.recipientDigests(address) else { return nil }
        return lock.withLock { table.reason(d.address) ?? table.reason(d.domain) }
    }

    package func reason(forRecipient address: String) -> SuppressionReason? {
        var a = address
        return a.withUTF8 { reason(forRecipient: UnsafeRawBufferPointer($0)) }
    }

    /// For mail of `tenant` (a `SuppressionKey.normaliseTenant` form; nil:
    /// no tenant): the tenant's own entries first (`scoped` true), then the
    /// global ones. Four digests, one lock: still O(1) per recipient.
    package func match(recipient address: String, tenant: [UInt8]?) -> (reason: SuppressionReason, scoped: Bool)? {
        var a = address
        return a.withUTF8 { raw -> (reason: SuppressionReason, scoped: Bool)? in
            let bytes = UnsafeRawBufferPointer(raw)
            guard let g = SuppressionKey.recipientDigests(bytes) else { return nil }
            let t = tenant.flatMap { t in t.withUnsafeBytes { SuppressionKey.recipientDigests(bytes, tenant: $0) } }
            return lock.withLock { () -> (reason: SuppressionReason, scoped: Bool)? in
                if let t, let r = table.reason(t.address) ?? table.reason(t.domain) { return (r, true) }
                if let r = table.reason(g.address) ?? table.reason(g.domain) { return (r, false) }
                return nil
            }
        }
    }

    /// Adds (`.add`) or removes (`.remove`) a normalised entry (see
    /// `SuppressionKey.normalise`). The table changes now; `durable` runs
    /// on the writer thread once the record is fsynced (or with the error).
    /// An add of an entry already present with the same reason, and a remove
    /// of one absent, change nothing and write nothing (`durable` still runs
    /// after the next commit). Returns whether the list changed.
    @discardableResult
    package func apply(_ op: SuppressionLog.Op, normalised text: [UInt8], reason: SuppressionReason,
                       time: Int64, durable: ((IOError?) -> Void)? = nil) -> Bool {
        let digest = text.withUnsafeBytes { SuppressionKey.digest($0) }
        let (changed, schedule) = lock.withLock { () -> (Bool, Bool) in
            let changed: Bool
            switch op {
            case .add:
                changed = table.reason(digest) != reason
                if changed { table.insert(digest, reason: reason) }
            case .remove:
                changed = table.remove(digest)
            }
            if changed {
                SuppressionLog.encode(op, reason: reason, time: time, text: text, into: &pending)
                pendingRecords += 1
            }
            if let durable { pendingCallbacks.append(durable) }
            guard (changed || durable != nil) && !flushScheduled else { return (changed, false) }
            flushScheduled = true
            return (changed, true)
        }
        if schedule { queue.async { [self] in flush() } }
        return changed
    }

    /// Runs `body` on the writer thread after every change made so far is durable.
    package func sync(_ body: @escaping (IOError?) -> Void) {
        let schedule = lock.withLock { () -> Bool in
            pendingCallbacks.append(body)
            if flushScheduled { return false }
            flushScheduled = true
            return true
        }
        if schedule { queue.async { [self] in flush() } }
    }

    /// Writes and fsyncs what is pending; on the writer queue.
    private func flush() {
        let (bytes, records, callbacks) = lock.withLock { () -> ([UInt8], Int, [(IOError?) -> Void]) in
            defer {
                pending = []
                pendingRecords = 0
                pendingCallbacks = []
                flushScheduled = false
            }
            return (pending, pendingRecords, pendingCallbacks)
        }
        var failure: IOError?
        if !bytes.isEmpty {
            do {
                try bytes.withUnsafeBytes { (b) throws in try Posix.writeAll(fd, b) }
                if fdatasync(fd) != 0 { throw IOError.lastErrno("fdatasync") }
                fileRecords += records
            } catch {
                // The table has these changes; the file does not (a torn record is cut at the next load).
                failure = IOError.wrapping(error)
                report("suppression list \(path): \(records) change(s) not written: \(error); they last until a restart")
            }
        }
        for c in callbacks { c(failure) }
        if failure == nil { compactIfDue() }
    }

    private func compactIfDue() {
        let live = lock.withLock { table.count }
        guard fileRecords >= compactionMinimum, fileRecords - live > fileRecords / 2 else { return }
        do {
            let before = fileRecords
            try compact()
            compactions += 1
            report("suppression list \(path): compacted \(before) records to \(fileRecords)")
        } catch {
            report("suppression list \(path): compaction failed, the log is kept as it was: \(error)")
        }
    }

    /// Rewrites the log with one add record per live entry; on the writer queue.
    /// Changes made meanwhile stay pending and go into the new file next.
    private func compact() throws {
        let temporary = path + ".compact"
        let out = Glibc.open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard out >= 0 else { throw IOError.lastErrno("open \(temporary)") }
        var keep = false
        defer { if !keep { close(out); unlink(temporary) } }
        var buffer = SuppressionLog.magic
        var offset: Int64 = 0
        var written = 0
        var writeError: IOError?
        let emitted = SuppressionTable()
        _ = try SuppressionLog.scan(fd: fd) { record in
            guard record.op == .add, writeError == nil else { return }
            let digest = SuppressionKey.digest(record.text)
            guard !emitted.contains(digest), let reason = lock.withLock({ table.reason(digest) }) else { return }
            emitted.insert(digest, reason: reason)
            SuppressionLog.encode(.add, reason: reason, time: record.time, text: record.text, into: &buffer)
            written += 1
            if buffer.count >= 1 << 20 {
                do {
                    try buffer.withUnsafeBytes { (b) throws in try Posix.writeAll(out, b, at: offset) }
                    offset += Int64(buffer.count)
                    buffer.removeAll(keepingCapacity: true)
                } catch { writeError = IOError.wrapping(error) }
            }
        }
        if let writeError { throw writeError }
        try buffer.withUnsafeBytes { (b) throws in try Posix.writeAll(out, b, at: offset) }
        guard fsync(out) == 0 else { throw IOError.lastErrno("fsync \(temporary)") }
        guard rename(temporary, path) == 0 else { throw IOError.lastErrno("rename \(temporary)") }
        // The new file is the log from here on, whatever fails next.
        keep = true
        close(fd)
        fd = out
        fileRecords = written
        guard lseek(fd, 0, SEEK_END) >= 0 else { throw IOError.lastErrno("lseek \(path)") }
        try Self.syncDirectory(of: path)
    }

    /// The entries in the order they were first added, read back from the
    /// log (memory holds digests only); at most `limit`, skipping the first
    /// `offset`. Runs on the writer thread after pending changes are written.
    package func entries(offset: Int = 0, limit: Int, including: ((UnsafeRawBufferPointer) -> Bool)? = nil,
                         _ done: @escaping (Result<[(text: String, reason: SuppressionReason, time: Int64)], IOError>) -> Void) {
        sync { [self] _ in
            // On the writer queue: the file does not change under the scan.
            var out: [(text: String, reason: SuppressionReason, time: Int64)] = []
            var skipped = 0
            let emitted = SuppressionTable()
            do {
                _ = try SuppressionLog.scan(fd: fd) { record in
                    guard record.op == .add, out.count < limit, including?(record.text) ?? true else { return }
                    let digest = SuppressionKey.digest(record.text)
                    guard !emitted.contains(digest), let reason = lock.withLock({ table.reason(digest) }) else { return }
                    emitted.insert(digest, reason: reason)
                    if skipped < offset { skipped += 1; return }
                    out.append((String(decoding: record.text, as: UTF8.self), reason, record.time))
                }
                done(.success(out))
            } catch {
                done(.failure(IOError.wrapping(error)))
            }
        }
    }

    /// Waits for the writer (tests and shutdown): every change made so far is durable when it returns.
    package func waitUntilDurable() {
        let done = DispatchSemaphore(value: 0)
        sync { _ in done.signal() }
        done.wait()
    }

    static func syncDirectory(of path: String) throws {
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let d = Glibc.open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0 else { throw IOError.lastErrno("open \(dir)") }
        defer { close(d) }
        guard fsync(d) == 0 else { throw IOError.lastErrno("fsync \(dir)") }
    }
}

extension IOError {
    /// `error` as an IOError (everything this file throws is one already).
    static func wrapping(_ error: any Error) -> IOError {
        error as? IOError ?? IOError(.invalidArgument("\(error)"), "suppression list")
    }
}
