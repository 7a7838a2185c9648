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
            var written = 0
            var result: Result<Void, IOError> = .success(())
            while written < buffer.count {
                guard let base = buffer.baseAddress else { break }
                let n = pwrite(fd, base + written, buffer.count - written, off_t(offset) + off_t(written))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    result = .failure(IOError(.errno(e), "pwrite"))
                    break
                }
                written += n
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
            var got = 0
            var result: Result<Int, IOError>?
            while got < buffer.count {
                guard let base = buffer.baseAddress else { break }
                let n = pread(fd, base + got, buffer.count - got, off_t(offset) + off_t(got))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    result = .failure(IOError(.errno(e), "pread"))
                    break
                }
                if n == 0 { break }  // end of file
                got += n
            }
            let r = result ?? .success(got)
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
