#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// The spool's namespace and whole-file operations: listing a directory,
/// reading a segment whole, renaming, truncating and removing files.
///
/// Synchronous: used by recovery (before the loops start) and by the writer on
/// rollover, maintenance and fault recovery, never per record. The daemon uses
/// `PosixSpoolFileSystem`; tests substitute a simulated disk that can lose
/// power (`Tests/PeregrineCoreTests/SimulatedSpoolDisk.swift`). Users are
/// generic over the conforming type, so there is no existential call.
public protocol SpoolFileSystem {
    /// mkdir -p.
    func makeDirectory(_ path: String) throws(SpoolError)
    /// The entry names in `path` (no `.`/`..`); nil when it cannot be opened.
    func listDirectory(_ path: String) -> [String]?
    /// True when `path` names a regular file.
    func fileExists(_ path: String) -> Bool
    /// The size of the file at `path`; nil when it cannot be examined.
    func fileSize(_ path: String) -> Int64?
    /// Reads the whole file at `path` into `buffer` (replaced by a larger
    /// allocation when too small); returns its length.
    func readFile(_ path: String, into buffer: inout UnsafeMutableRawBufferPointer) -> Result<Int, SpoolError>
    /// Creates (or replaces) `path` with `bytes` and makes it durable (fdatasync).
    func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) -> SpoolError?
    /// Cuts the file to `length` bytes and makes that durable.
    func truncateFile(_ path: String, length: Int64) -> SpoolError?
    /// rename(2).
    func rename(_ from: String, to: String) -> SpoolError?
    /// unlink(2); a missing file is not an error.
    func removeFile(_ path: String) -> SpoolError?
    /// fsync on a directory so that entries created, renamed or removed in it are durable.
    func syncDirectory(_ path: String)
}

/// Everything a `SpoolStreamWriter` does that touches a file or a clock:
/// positional writes and reads, fdatasync, timers (group commit, retries),
/// plus the synchronous namespace operations.
///
/// Contract (as `EventLoop`'s): one thread calls every method and receives
/// every callback; callbacks never run inside the call that started them;
/// `fdatasync` covers every write to the file whose `write` call was made
/// before it, and its `done` runs when that data is durable.
public protocol SpoolIO: AnyObject, SpoolFileSystem {
    /// Monotonic nanoseconds (timer base).
    var now: UInt64 { get }
    @discardableResult
    func scheduleTimer(after nanoseconds: UInt64, _ fire: @escaping () -> Void) -> TimerHandle
    func cancelTimer(_ timer: TimerHandle)
    func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle
    func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
               _ done: @escaping (Result<Void, IOError>) -> Void)
    func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
              _ done: @escaping (Result<Int, IOError>) -> Void)
    func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void)
    func closeFile(_ file: FileHandle)
}

/// The real spool I/O: file operations through the event loop (io_uring,
/// epoll or Dispatch), namespace operations with plain syscalls.
public final class LoopSpoolIO<Loop: EventLoop>: SpoolIO {
    public let loop: Loop
    private let fs = PosixSpoolFileSystem()
    public init(loop: Loop) { self.loop = loop }

    @inline(__always) public var now: UInt64 { loop.now }
    @inline(__always) @discardableResult
    public func scheduleTimer(after nanoseconds: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        loop.scheduleTimer(after: nanoseconds, fire)
    }
    @inline(__always) public func cancelTimer(_ timer: TimerHandle) { loop.cancelTimer(timer) }
    @inline(__always) public func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle {
        try loop.openFile(path, create: create, truncate: truncate)
    }
    @inline(__always) public func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
                                        _ done: @escaping (Result<Void, IOError>) -> Void) {
        loop.write(file, buffer, at: offset, done)
    }
    @inline(__always) public func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                                       _ done: @escaping (Result<Int, IOError>) -> Void) {
        loop.read(file, into: buffer, at: offset, done)
    }
    @inline(__always) public func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        loop.fdatasync(file, done)
    }
    @inline(__always) public func closeFile(_ file: FileHandle) { loop.closeFile(file) }

    public func makeDirectory(_ path: String) throws(SpoolError) { try fs.makeDirectory(path) }
    public func listDirectory(_ path: String) -> [String]? { fs.listDirectory(path) }
    public func fileExists(_ path: String) -> Bool { fs.fileExists(path) }
    public func fileSize(_ path: String) -> Int64? { fs.fileSize(path) }
    public func readFile(_ path: String, into buffer: inout UnsafeMutableRawBufferPointer) -> Result<Int, SpoolError> {
        fs.readFile(path, into: &buffer)
    }
    public func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) -> SpoolError? { fs.writeFile(path, bytes) }
    public func truncateFile(_ path: String, length: Int64) -> SpoolError? { fs.truncateFile(path, length: length) }
    public func rename(_ from: String, to: String) -> SpoolError? { fs.rename(from, to: to) }
    public func removeFile(_ path: String) -> SpoolError? { fs.removeFile(path) }
    public func syncDirectory(_ path: String) { fs.syncDirectory(path) }
}

/// The spool's namespace operations with plain blocking syscalls.
public struct PosixSpoolFileSystem: SpoolFileSystem {
    public init() {}

    public func makeDirectory(_ path: String) throws(SpoolError) { try SpoolFiles.makeDirectory(path) }

    public func listDirectory(_ path: String) -> [String]? {
        guard let d = opendir(path) else { return nil }
        defer { closedir(d) }
        var names: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func fileExists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    public func fileSize(_ path: String) -> Int64? {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : nil
    }

    public func readFile(_ path: String, into buffer: inout UnsafeMutableRawBufferPointer) -> Result<Int, SpoolError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return .failure(.io(path: path, operation: "open", errno: errno)) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { return .failure(.io(path: path, operation: "fstat", errno: errno)) }
        let size = Int(st.st_size)
        if buffer.count < size {
            buffer.deallocate()
            buffer = .allocate(byteCount: size, alignment: 4096)
        }
        do {
            return .success(try Posix.preadFull(fd, UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< size]), at: 0))
        } catch {
            return .failure(.io(path: path, operation: "read", errno: error.errnoValue ?? EIO))
        }
    }

    public func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) -> SpoolError? {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { return .io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        do {
            try Posix.writeAll(fd, bytes, at: 0)
        } catch {
            return .io(path: path, operation: "write", errno: error.errnoValue ?? EIO)
        }
        if fdatasync(fd) != 0 { return .io(path: path, operation: "fdatasync", errno: errno) }
        return nil
    }

    public func truncateFile(_ path: String, length: Int64) -> SpoolError? {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { return .io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        if ftruncate(fd, off_t(length)) != 0 { return .io(path: path, operation: "ftruncate", errno: errno) }
        if fsync(fd) != 0 { return .io(path: path, operation: "fsync", errno: errno) }
        return nil
    }

    public func rename(_ from: String, to: String) -> SpoolError? {
        Glibc.rename(from, to) == 0 ? nil : .io(path: from, operation: "rename to \(to)", errno: errno)
    }

    public func removeFile(_ path: String) -> SpoolError? {
        unlink(path) == 0 || errno == ENOENT ? nil : .io(path: path, operation: "unlink", errno: errno)
    }

    public func syncDirectory(_ path: String) { SpoolFiles.syncDirectory(path) }
}
