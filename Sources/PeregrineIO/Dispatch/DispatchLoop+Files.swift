#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// Files: the syscalls block, so they run on the loop's serial utility queue
/// (`fileQueue`), one at a time in call order: an fdatasync queued after a
/// write therefore runs after it and covers it. Each completion is posted
/// back onto the loop queue as its own turn.
extension DispatchLoop {
    public func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle {
        FileHandle(fd: try Posix.openFile(path, create: create, truncate: truncate))
    }

    public func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = file.fd
        let box = Unchecked((buffer, done))
        fileQueue.async { [self] in
            let (buffer, _) = box.value
            let result: Result<Void, IOError> = Result { () throws(IOError) in
                try Posix.writeAll(fd, buffer, at: offset)
            }
            let r = result
            queue.async { [self] in turn { box.value.1(r) } }
        }
    }

    public func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                     _ done: @escaping (Result<Int, IOError>) -> Void) {
        let fd = file.fd
        let box = Unchecked((buffer, done))
        fileQueue.async { [self] in
            let (buffer, _) = box.value
            let r: Result<Int, IOError> = Result { () throws(IOError) in
                try Posix.preadFull(fd, buffer, at: offset)
            }
            queue.async { [self] in turn { box.value.1(r) } }
        }
    }

    public func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = file.fd
        let box = Unchecked(done)
        fileQueue.async { [self] in
            var rc: Int32
            repeat { rc = Glibc.fdatasync(fd) } while rc != 0 && errno == EINTR
            let r: Result<Void, IOError> = rc == 0 ? .success(()) : .failure(IOError.lastErrno("fdatasync"))
            queue.async { [self] in turn { box.value(r) } }
        }
    }

    public func closeFile(_ file: FileHandle) {
        let fd = file.fd
        // Behind every operation already queued for it.
        fileQueue.async { _ = Glibc.close(fd) }
    }
}

/// Carries loop-confined values through the file queue and back; they are
/// only used on the loop queue (the buffer is the caller's until `done`).
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
