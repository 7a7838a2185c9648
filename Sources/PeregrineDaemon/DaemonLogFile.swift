#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineAccounting

/// `log-file PATH`: the operator's log. One line per event, each starting with
/// an ISO 8601 UTC timestamp (`2026-12-05T12:16:03.123Z`), rotated like the
/// accounting files (`log-rotate`).
///
/// Writes never block the caller on the disk: `write` formats the line and
/// appends it to a pending buffer under a lock; a writer thread of its own
/// takes the buffer and writes it. The buffer is bounded
/// (`Options.maxPendingBytes`): a line that does not fit is dropped and
/// counted, and the count is written to the log once the writer catches up.
/// Thread-safe: any loop may write.
public final class DaemonLogFile: @unchecked Sendable {
    public struct Options: Hashable, Sendable {
        public var path: String
        /// `log-rotate SIZE`: rotate before the file passes this many bytes.
        public var maxSize: Int64?
        /// `log-rotate DURATION`: rotate at every multiple of this many seconds
        /// of UTC time (a day: at midnight). Daily unless `log-rotate` says otherwise.
        public var moveInterval: Int64? = 86_400
        /// `log-rotate N`: rotated files kept (the oldest beyond it are deleted); nil keeps every one.
        public var keep: Int? = 10
        /// Lines waiting for the writer, in bytes, before new ones are dropped.
        public var maxPendingBytes = 4 << 20
        /// `log-file-world-readable yes`: mode 0644 instead of 0640 (the log names senders and recipients).
        public var worldReadable = false

        public init(path: String) { self.path = path }
    }

    public let options: Options
    /// Wall-clock nanoseconds since 1970 (the timestamps and rotation times); injected by tests.
    private let wallClock: @Sendable () -> Int64
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var pending: [UInt8] = []
    private var enqueued: UInt64 = 0
    private var written: UInt64 = 0
    private var dropped: UInt64 = 0
    private var droppedReported: UInt64 = 0
    private var rotateRequested = false
    private var closing = false
    private var finished = false
    // Writer thread only (and `init`):
    private var fd: Int32 = -1
    private var fileSize: Int64 = 0
    private var nextIntervalRotation: Int64?
    private var rotated: [String] = []
    private var lastError: String?

    /// Called on the writer thread when a write, rename or open fails (the
    /// daemon reports it on stderr: the log file cannot say it itself).
    public var onError: (@Sendable (String) -> Void)?

    public static let systemWallClock: @Sendable () -> Int64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Opens (creates, mode 0640 or 0644) the file and starts the writer thread.
    /// Throws when the file cannot be opened: the daemon refuses to start.
    public init(options: Options, wallClock: @escaping @Sendable () -> Int64 = DaemonLogFile.systemWallClock) throws(AccountingError) {
        self.options = options
        self.wallClock = wallClock
        try openCurrent(now: wallClock() / 1_000_000_000)
        pending.reserveCapacity(64 * 1024)
        let t = Thread { [self] in writerLoop() }
        t.name = "peregrine-log-writer"
        t.start()
    }

    /// Appends one line (newlines in `message` become spaces: one event, one
    /// line, for grep). Never blocks on the disk; dropped and counted when the
    /// writer is `maxPendingBytes` behind.
    public func write(_ message: String) {
        var line: [UInt8] = []
        line.reserveCapacity(message.utf8.count + 26)
        Self.appendTimestamp(wallClock(), to: &line)
        line.append(UInt8(ascii: " "))
        for b in message.utf8 { line.append(b == 0x0A || b == 0x0D ? 0x20 : b) }
        line.append(0x0A)
        condition.lock()
        defer { condition.unlock() }
        guard !closing else { return }
        if pending.count + line.count > options.maxPendingBytes {
            dropped += 1
            return
        }
        pending.append(contentsOf: line)
        enqueued += 1
        condition.signal()
    }

    /// Waits (at most `timeoutSeconds`) until every line written before the
    /// call is in the file. For shutdown and tests; never call it on a loop.
    @discardableResult
    public func flush(timeoutSeconds: Double = 5) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let target = enqueued
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while written < target && !finished {
            if !condition.wait(until: deadline) { return written >= target }
        }
        return written >= target
    }

    /// Rotates now (after the lines already written), whatever the size and interval.
    public func rotate() {
        condition.lock()
        rotateRequested = true
        condition.signal()
        condition.unlock()
    }

    /// Writes what is pending, stops the writer and closes the file (bounded
    /// by `timeoutSeconds`: a stuck disk does not hold the shutdown). Later writes are dropped.
    public func close(timeoutSeconds: Double = 5) {
        condition.lock()
        closing = true
        condition.broadcast()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while !finished {
            if !condition.wait(until: deadline) { break }
        }
        condition.unlock()
    }

    /// Lines dropped because the writer was too far behind.
    public var droppedLines: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return dropped
    }

    /// Paths the file was rotated to by this process, oldest first.
    public var rotatedPaths: [String] {
        condition.lock()
        defer { condition.unlock() }
        return rotated
    }

    // MARK: Writer thread

    private func writerLoop() {
        condition.lock()
        while true {
            while pending.isEmpty && !rotateRequested && !closing && dropped == droppedReported {
                // Wake for an interval rotation even when nothing is logged.
                if let next = nextIntervalRotation {
                    let now = wallClock()
                    let wait = Double(max(0, next * 1_000_000_000 - now)) / 1e9 + 0.001
                    if !condition.wait(until: Date().addingTimeInterval(min(wait, 60))) { break }
                } else {
                    condition.wait()
                }
            }
            var batch = pending
            pending.removeAll(keepingCapacity: true)
            let batchLines = enqueued
            let newlyDropped = dropped - droppedReported
            droppedReported = dropped
            let rotateNow = rotateRequested
            rotateRequested = false
            let stop = closing
            condition.unlock()

            let nowNanos = wallClock()
            let now = nowNanos / 1_000_000_000
            if newlyDropped > 0 {
                var note: [UInt8] = []
                Self.appendTimestamp(nowNanos, to: &note)
                note.append(contentsOf: " \(newlyDropped) log line(s) dropped: the log writer fell behind the daemon\n".utf8)
                batch.append(contentsOf: note)
            }
            if rotateNow { rotateFile(now: now) }
            if let next = nextIntervalRotation, now >= next {
                if fileSize > 0 { rotateFile(now: now) } else { nextIntervalRotation = RotatedFiles.nextIntervalRotation(after: now, interval: options.moveInterval) }
            }
            if let max = options.maxSize, fileSize > 0, fileSize + Int64(batch.count) > max { rotateFile(now: now) }
            if !batch.isEmpty { writeAll(batch) }

            condition.lock()
            written = batchLines
            condition.broadcast()
            if stop && pending.isEmpty { break }
        }
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    private func openCurrent(now: Int64) throws(AccountingError) {
        (fd, fileSize) = try RotatedFiles.openForAppend(options.path, worldReadable: options.worldReadable)
        nextIntervalRotation = RotatedFiles.nextIntervalRotation(after: now, interval: options.moveInterval)
    }

    private func rotateFile(now: Int64) {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        let target = RotatedFiles.name(for: options.path, now: now)
        if rename(options.path, target) == 0 {
            condition.lock()
            rotated.append(target)
            condition.unlock()
        } else {
            report("\(options.path): rename to \(target) failed: \(String(cString: strerror(errno)))")
        }
        do throws(AccountingError) {
            try openCurrent(now: now)
        } catch {
            report("\(error)")
        }
        let pruned = RotatedFiles.prune(for: options.path, now: now, maxAgeSeconds: nil, keep: options.keep)
        for e in pruned.errors { report("\(e)") }
    }

    private func writeAll(_ bytes: [UInt8]) {
        guard fd >= 0 else { report("\(options.path): not open; \(bytes.count) byte(s) of log lost"); return }
        var n = 0
        let error = bytes.withUnsafeBytes { Posix.writeAll(fd, $0, written: &n) }
        fileSize += Int64(n)
        if let error { report("\(options.path): write failed: \(error); \(bytes.count - n) byte(s) of log lost") }
    }

    /// One report per distinct failure in a row (a full disk would otherwise repeat it for every batch).
    private func report(_ text: String) {
        guard text != lastError else { return }
        lastError = text
        onError?(text)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` for wall-clock nanoseconds since 1970.
    static func appendTimestamp(_ nanoseconds: Int64, to out: inout [UInt8]) {
        let seconds = nanoseconds >= 0 ? nanoseconds / 1_000_000_000 : (nanoseconds - 999_999_999) / 1_000_000_000
        let millis = (nanoseconds - seconds * 1_000_000_000) / 1_000_000
        var stamp: [UInt8] = []
        AccountingTimestamp.append(seconds, to: &stamp)  // "YYYY-MM-DD HH:MM:SS+0000"
        out.append(contentsOf: stamp.prefix(10))
        out.append(UInt8(ascii: "T"))
        out.append(contentsOf: stamp[11..<19])
        out.append(UInt8(ascii: "."))
        out.append(UInt8(ascii: "0") + UInt8(millis / 100))
        out.append(UInt8(ascii: "0") + UInt8(millis / 10 % 10))
        out.append(UInt8(ascii: "0") + UInt8(millis % 10))
        out.append(UInt8(ascii: "Z"))
    }
}
