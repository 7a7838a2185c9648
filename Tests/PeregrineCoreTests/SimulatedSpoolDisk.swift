#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
@testable import PeregrineSpool

/// A disk and a clock for the spool's real code (`SpoolStreamWriter`,
/// `SpoolRecovery`) that can lose power (TigerBeetle's `testing/storage.zig`
/// idea, STYLE.md "Simulate storage; inject faults").
///
/// - A completed `write` lands in the file's cache (what reads see) and in its
///   list of unsynced writes; `fdatasync` moves to the durable image exactly
///   the writes whose `write` call came before it (the `EventLoop` contract),
///   and completes only after they have.
/// - Directory entries (create, unlink, rename) are durable only after
///   `syncDirectory` of their directory.
/// - `powerLossImage()` is what a machine would find after losing power now:
///   the durable image of every file, plus each unsynced or in-flight write
///   torn at sector (512 B) granularity (each sector kept or lost by the seed),
///   and each unsynced directory change kept or lost.
/// - Faults from the seed or armed by a test: a write or fdatasync fails with
///   ENOSPC or EIO; a failed write may have put a prefix in the cache; a
///   failed fdatasync drops the dirty data it was to sync (Linux marks the
///   pages clean: a retried fsync will not write them).
/// - `acknowledgeWithoutSync` is the mutation check: fdatasync succeeds and
///   makes nothing durable, as if the sync were removed from the spool.
///
/// Time is virtual: timers fire when the simulation reaches them; `step()`
/// runs one event (an I/O completion chosen by the seed among those allowed,
/// or the next timer), so any step is a crash point.
final class SimulatedSpoolDisk: SpoolIO {
    static let sectorSize = 512

    final class Inode {
        /// What reads see (page cache).
        var data: [UInt8] = []
        /// What survives power loss.
        var durable: [UInt8] = []
        /// Completed writes not yet covered by a completed fdatasync, in issue order.
        var unsynced: [(seq: UInt64, offset: Int, bytes: [UInt8])] = []
        init(data: [UInt8] = [], durable: [UInt8] = []) { self.data = data; self.durable = durable }
    }

    enum Op {
        case write(seq: UInt64, inode: Inode, offset: Int, bytes: [UInt8], done: (Result<Void, IOError>) -> Void)
        case fsync(seq: UInt64, inode: Inode, done: (Result<Void, IOError>) -> Void)
        case read(inode: Inode, buffer: UnsafeMutableRawBufferPointer, offset: Int, done: (Result<Int, IOError>) -> Void)
    }

    var rng: SeededRandom
    var acknowledgeWithoutSync = false
    /// Seeded fault rate per write / fdatasync (0 = none).
    var faultRate = 0.0
    /// Fail the next N writes (or fsyncs) with this errno (a test arms it).
    var failNextWrites = 0, failNextSyncs = 0
    var armedErrno: Int32 = ENOSPC
    /// Bytes the files may hold in total (nil = unlimited): a write past it fails with ENOSPC.
    var capacity: Int?

    private(set) var namespace: [String: Inode] = [:]
    private(set) var durableNamespace: [String: Inode] = [:]
    private(set) var directories: Set<String> = []
    private var handles: [Int32: Inode] = [:]
    private var nextFD: Int32 = 3
    private var seq: UInt64 = 0
    private var inFlight: [Op] = []
    private var timers: [(due: UInt64, order: UInt64, id: UInt64, fire: () -> Void)] = []
    private var timerOrder: UInt64 = 0
    private(set) var now: UInt64 = 0
    private(set) var steps = 0
    var faultsInjected = 0

    init(seed: UInt64) { rng = SeededRandom(seed: seed) }

    private func chance(_ p: Double) -> Bool { p > 0 && rng.unit() < p }

    // MARK: Driving

    var isQuiet: Bool { inFlight.isEmpty && timers.isEmpty }

    /// Runs one event; false when there is nothing left to run.
    @discardableResult
    func step() -> Bool {
        let ready = readyOps()
        let timerDue = timers.contains { $0.due <= now }
        if !ready.isEmpty && (!timerDue || rng.next() % 2 == 0) {
            let i = ready[Int(rng.next() % UInt64(ready.count))]
            complete(inFlight.remove(at: i))
        } else if let t = timers.indices.min(by: { (timers[$0].due, timers[$0].order) < (timers[$1].due, timers[$1].order) }) {
            let timer = timers.remove(at: t)
            if timer.due > now { now = timer.due }
            timer.fire()
        } else {
            return false
        }
        steps += 1
        return true
    }

    /// Steps until `done()` or nothing is left (bounded).
    func run(maxSteps: Int = 1_000_000, until done: () -> Bool = { false }) {
        var n = 0
        while !done() && n < maxSteps && step() { n += 1 }
    }

    /// Indices of in-flight operations that may complete now: an fdatasync
    /// waits for the writes to its file issued before it (the contract).
    private func readyOps() -> [Int] {
        var out: [Int] = []
        for (i, op) in inFlight.enumerated() {
            if case .fsync(let s, let inode, _) = op {
                let blocked = inFlight.contains {
                    if case .write(let ws, let wi, _, _, _) = $0 { return wi === inode && ws < s }
                    return false
                }
                if blocked { continue }
            }
            out.append(i)
        }
        return out
    }

    private func injected(_ armed: inout Int) -> Int32? {
        if armed > 0 { armed -= 1; faultsInjected += 1; return armedErrno }
        if chance(faultRate) { faultsInjected += 1; return rng.next() % 2 == 0 ? ENOSPC : EIO }
        return nil
    }

    /// Bytes held by all files (for `capacity`).
    func totalBytes() -> Int { namespace.values.reduce(0) { $0 + $1.data.count } }

    private func complete(_ op: Op) {
        switch op {
        case .write(let s, let inode, let offset, let bytes, let done):
            var failure = injected(&failNextWrites)
            if failure == nil, let cap = capacity, totalBytes() - inode.data.count + max(inode.data.count, offset + bytes.count) > cap {
                failure = ENOSPC
            }
            if let e = failure {
                // A failed write may still have put a prefix in the cache.
                let sectors = (bytes.count + Self.sectorSize - 1) / Self.sectorSize
                let keep = min(bytes.count, Int(rng.next() % UInt64(sectors + 1)) * Self.sectorSize)
                if keep > 0, capacity == nil {
                    Self.apply(Array(bytes[0 ..< keep]), at: offset, to: &inode.data)
                    inode.unsynced.append((s, offset, Array(bytes[0 ..< keep])))
                }
                done(.failure(IOError(.errno(e), "write")))
                return
            }
            Self.apply(bytes, at: offset, to: &inode.data)
            inode.unsynced.append((s, offset, bytes))
            done(.success(()))
        case .fsync(let s, let inode, let done):
            if let e = injected(&failNextSyncs) {
                // Linux: the dirty pages are marked clean without being written.
                inode.unsynced.removeAll { $0.seq < s }
                done(.failure(IOError(.errno(e), "fdatasync")))
                return
            }
            if !acknowledgeWithoutSync {
                for w in inode.unsynced where w.seq < s { Self.apply(w.bytes, at: w.offset, to: &inode.durable) }
                inode.unsynced.removeAll { $0.seq < s }
            }
            done(.success(()))
        case .read(let inode, let buffer, let offset, let done):
            let n = max(0, min(buffer.count, inode.data.count - offset))
            if n > 0 { inode.data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) } }
            done(.success(n))
        }
    }

    static func apply(_ bytes: [UInt8], at offset: Int, to file: inout [UInt8]) {
        if file.count < offset + bytes.count { file += [UInt8](repeating: 0, count: offset + bytes.count - file.count) }
        file.replaceSubrange(offset ..< offset + bytes.count, with: bytes)
    }

    // MARK: Power loss

    /// A new disk holding what survives losing power at this instant (see the type's comment).
    func powerLossImage(seed: UInt64) -> SimulatedSpoolDisk {
        var r = SeededRandom(seed: seed)
        let image = SimulatedSpoolDisk(seed: seed ^ 0x5EED)
        image.directories = directories
        var paths = Set(namespace.keys)
        paths.formUnion(durableNamespace.keys)
        var built: [ObjectIdentifier: Inode] = [:]
        func survivor(_ inode: Inode) -> Inode {
            if let b = built[ObjectIdentifier(inode)] { return b }
            var content = inode.durable
            var pending = inode.unsynced.map { ($0.seq, $0.offset, $0.bytes) }
            for op in inFlight {
                if case .write(let s, let i, let o, let b, _) = op, i === inode { pending.append((s, o, b)) }
            }
            pending.sort { $0.0 < $1.0 }
            for (_, offset, bytes) in pending {
                // Tear at sector boundaries of the file: each sector of the write is kept or lost.
                var p = offset
                while p < offset + bytes.count {
                    let end = min(offset + bytes.count, (p / Self.sectorSize + 1) * Self.sectorSize)
                    if r.next() % 2 == 0 { Self.apply(Array(bytes[(p - offset) ..< (end - offset)]), at: p, to: &content) }
                    p = end
                }
            }
            let b = Inode(data: content, durable: content)
            built[ObjectIdentifier(inode)] = b
            return b
        }
        for path in paths.sorted() {
            let cur = namespace[path], dur = durableNamespace[path]
            let chosen = cur === dur ? cur : (r.next() % 2 == 0 ? cur : dur)
            if let c = chosen {
                let s = survivor(c)
                image.namespace[path] = s
                image.durableNamespace[path] = s
            }
        }
        return image
    }

    // MARK: SpoolIO

    @discardableResult
    func scheduleTimer(after nanoseconds: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        timerOrder += 1
        timers.append((now + nanoseconds, timerOrder, timerOrder, fire))
        return TimerHandle(id: timerOrder)
    }

    func cancelTimer(_ timer: TimerHandle) { timers.removeAll { $0.id == timer.id } }

    func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle {
        var inode = namespace[path]
        if inode == nil || truncate {
            guard create || inode != nil else { throw IOError(.errno(ENOENT), "open \(path)") }
            inode = Inode()
            namespace[path] = inode
        }
        let fd = nextFD
        nextFD += 1
        handles[fd] = inode
        return FileHandle(fd: fd)
    }

    func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
               _ done: @escaping (Result<Void, IOError>) -> Void) {
        guard let inode = handles[file.fd] else { scheduleTimer(after: 0) { done(.failure(IOError(.errno(EBADF), "write"))) }; return }
        seq += 1
        inFlight.append(.write(seq: seq, inode: inode, offset: Int(offset), bytes: Array(buffer), done: done))
    }

    func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
              _ done: @escaping (Result<Int, IOError>) -> Void) {
        guard let inode = handles[file.fd] else { scheduleTimer(after: 0) { done(.failure(IOError(.errno(EBADF), "read"))) }; return }
        inFlight.append(.read(inode: inode, buffer: buffer, offset: Int(offset), done: done))
    }

    func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        guard let inode = handles[file.fd] else { scheduleTimer(after: 0) { done(.failure(IOError(.errno(EBADF), "fdatasync"))) }; return }
        seq += 1
        inFlight.append(.fsync(seq: seq, inode: inode, done: done))
    }

    func closeFile(_ file: FileHandle) { handles[file.fd] = nil }

    // MARK: SpoolFileSystem

    func makeDirectory(_ path: String) throws(SpoolError) { directories.insert(path) }

    func listDirectory(_ path: String) -> [String]? {
        guard directories.contains(path) else { return nil }
        let prefix = path + "/"
        var names = Set<String>()
        for p in namespace.keys where p.hasPrefix(prefix) && !p.dropFirst(prefix.count).contains("/") {
            names.insert(String(p.dropFirst(prefix.count)))
        }
        for d in directories where d.hasPrefix(prefix) && !d.dropFirst(prefix.count).contains("/") {
            names.insert(String(d.dropFirst(prefix.count)))
        }
        return names.sorted()
    }

    func fileExists(_ path: String) -> Bool { namespace[path] != nil }
    func fileSize(_ path: String) -> Int64? { namespace[path].map { Int64($0.data.count) } }

    func readFile(_ path: String, into buffer: inout UnsafeMutableRawBufferPointer) -> Result<Int, SpoolError> {
        guard let inode = namespace[path] else { return .failure(.io(path: path, operation: "open", errno: ENOENT)) }
        if buffer.count < inode.data.count {
            buffer.deallocate()
            buffer = .allocate(byteCount: inode.data.count, alignment: 4096)
        }
        let n = inode.data.count
        if n > 0 { inode.data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) } }
        return .success(n)
    }

    func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) -> SpoolError? {
        let inode = Inode(data: Array(bytes), durable: Array(bytes))
        namespace[path] = inode
        return nil
    }

    func truncateFile(_ path: String, length: Int64) -> SpoolError? {
        guard let inode = namespace[path] else { return .io(path: path, operation: "open", errno: ENOENT) }
        // ftruncate + fsync: the dirty writes are written, then both images cut.
        for w in inode.unsynced { Self.apply(w.bytes, at: w.offset, to: &inode.durable) }
        inode.unsynced = []
        let n = Int(length)
        if inode.data.count > n { inode.data.removeLast(inode.data.count - n) }
        if inode.durable.count > n { inode.durable.removeLast(inode.durable.count - n) }
        return nil
    }

    func rename(_ from: String, to: String) -> SpoolError? {
        guard let inode = namespace.removeValue(forKey: from) else { return .io(path: from, operation: "rename", errno: ENOENT) }
        namespace[to] = inode
        return nil
    }

    func removeFile(_ path: String) -> SpoolError? {
        namespace[path] = nil
        return nil
    }

    func syncDirectory(_ path: String) {
        let prefix = path + "/"
        func direct(_ p: String) -> Bool { p.hasPrefix(prefix) && !p.dropFirst(prefix.count).contains("/") }
        for p in durableNamespace.keys where direct(p) && namespace[p] == nil { durableNamespace[p] = nil }
        for (p, inode) in namespace where direct(p) { durableNamespace[p] = inode }
    }

    /// The current content of `path` (tests inspect and damage files with these).
    func contents(_ path: String) -> [UInt8]? { namespace[path]?.data }
    func setContents(_ path: String, _ bytes: [UInt8]) {
        let inode = Inode(data: bytes, durable: bytes)
        namespace[path] = inode
        durableNamespace[path] = inode
    }
}
