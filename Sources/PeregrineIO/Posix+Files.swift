#if canImport(Glibc)
import Glibc
#endif

/// The one write-everything and read-everything loop over pwrite/write/pread/read,
/// so every caller (the epoll and Dispatch file workers, the spool's sync
/// writer and recovery, the accounting writer and reader, the resolver's
/// resolv.conf) shares one EINTR rule and one zero-byte rule. Blocking: call them off the loop thread or on a file whose
/// I/O may block (startup, recovery, a worker thread).
extension Posix {
    /// Writes every byte of `buffer` to `fd`: at `offset` with pwrite(2), or at
    /// the file position with write(2) when `offset` is nil (an O_APPEND file).
    /// Retries EINTR and short writes. A write that makes no progress (returns 0)
    /// fails with EIO rather than spinning: the kernel does that only on a
    /// device that cannot take more.
    ///
    /// - Parameter written: set to the bytes that reached the file, on success
    ///   (`buffer.count`) and on failure (a prefix), so a caller can account for
    ///   a partial write.
    /// - Returns: nil when every byte was written, else the error, whose
    ///   operation is "pwrite" or "write".
    package static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64? = nil,
                                 written: inout Int) -> IOError? {
        written = 0
        guard let base = buffer.baseAddress else { return nil }
        let operation = offset == nil ? "write" : "pwrite"
        while written < buffer.count {
            let n: Int
            if let offset {
                n = Glibc.pwrite(fd, base + written, buffer.count - written, off_t(offset) + off_t(written))
            } else {
                n = Glibc.write(fd, base + written, buffer.count - written)
            }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                return IOError(.errno(e), operation)
            }
            if n == 0 { return IOError(.errno(EIO), operation) }
            written += n
        }
        return nil
    }

    /// `writeAll(_:_:at:written:)` for callers that need no byte count.
    package static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64? = nil) throws(IOError) {
        var written = 0
        if let error = writeAll(fd, buffer, at: offset, written: &written) { throw error }
    }

    /// Reads from `fd` at `offset` (pread(2)) until `buffer` is full or the file
    /// ends. Retries EINTR and short reads.
    ///
    /// - Returns: the bytes read: `buffer.count`, or fewer only because the file
    ///   ended (0 when `offset` is at or past its end).
    /// - Throws: the first failing pread (operation "pread"); bytes read before it are discarded.
    package static func preadFull(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer,
                                  at offset: Int64) throws(IOError) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw IOError(.errno(e), "pread")
            }
            if n == 0 { break }  // end of file
            done += n
        }
        return done
    }

    /// Reads the file at `path` to its end, or its first `maxBytes` when it is
    /// longer. Retries EINTR and short reads. For small files read whole at
    /// start-up or by tools (resolv.conf, accounting files), not the hot path.
    ///
    /// - Throws: operation "open" or "read", with the errno.
    package static func readFile(_ path: String, maxBytes: Int = .max) throws(IOError) -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IOError.lastErrno("open") }
        defer { Glibc.close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while out.count < maxBytes {
            let want = min(chunk.count, maxBytes - out.count)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, want) }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw IOError(.errno(e), "read")
            }
            if n == 0 { break }  // end of file
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }
}
