#if canImport(Glibc)
import Glibc
#endif
import CURing

private let maxChunk = 1 << 30

extension URingLoop {
    public func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle {
        let fd = try Posix.openFile(path, create: create, truncate: truncate)
        registerFD(fd)
        return FileHandle(fd: fd)
    }

    // MARK: Write

    public func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = file.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "write")); return
        }
        let index = slots.allocate(.fileWrite, fd: fd, completion: .void(done))
        slots.slots[Int(index)].buffer = UnsafeMutableRawPointer(mutating: buffer.baseAddress)
        slots.slots[Int(index)].length = buffer.count
        slots.slots[Int(index)].offset = offset
        let epoch = fds[Int(fd)].epoch
        slots.slots[Int(index)].epoch = epoch
        guard submitFileIO(index, write: true) else {
            fail(slots.release(index), Self.noSQE("write")); return
        }
        lastFileWrite = (fd, ring.pointee.sq.sqe_tail)
        fds[Int(fd)].pending += 1
        fds[Int(fd)].addWrite(epoch: epoch)
    }

    private func submitFileIO(_ index: Int32, write: Bool) -> Bool {
        guard let sqe = nextSQE() else { return false }
        let s = slots.slots[Int(index)]
        let remaining = UInt32(min(s.length - s.progress, maxChunk))
        let at = UInt64(bitPattern: s.offset &+ Int64(s.progress))
        if write {
            io_uring_prep_write(sqe, s.fd, s.buffer.map { UnsafeRawPointer($0 + s.progress) }, remaining, at)
        } else {
            io_uring_prep_read(sqe, s.fd, s.buffer.map { $0 + s.progress }, remaining, at)
        }
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    func completeFileWrite(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        var result: Result<Void, IOError> = .success(())
        if res > 0 {
            slots.slots[Int(index)].progress += Int(res)
            let s = slots.slots[Int(index)]
            if s.progress < s.length {
                if submitFileIO(index, write: true) { return }   // short write: write the rest
                result = .failure(Self.noSQE("write"))
            }
        } else if res == 0 && slots.slots[Int(index)].length > 0 {
            result = .failure(IOError(.errno(EIO), "write: no progress"))
        } else if res < 0 {
            if -res == EINTR || -res == EAGAIN, submitFileIO(index, write: true) { return }
            result = .failure(Self.error(res, "write"))
        }
        let epoch = slots.slots[Int(index)].epoch
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        fds[Int(fd)].removeWrite(epoch: epoch)
        releaseWaitingFsyncs(fd)
        finishCloseIfIdle(fd)
        if case .void(let done) = completion { done(result) }
    }

    // MARK: Read

    public func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                     _ done: @escaping (Result<Int, IOError>) -> Void) {
        let fd = file.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.count(done), IOError(.cancelled, "read")); return
        }
        let index = slots.allocate(.fileRead, fd: fd, completion: .count(done))
        slots.slots[Int(index)].buffer = buffer.baseAddress
        slots.slots[Int(index)].length = buffer.count
        slots.slots[Int(index)].offset = offset
        guard submitFileIO(index, write: false) else {
            fail(slots.release(index), Self.noSQE("read")); return
        }
        fds[Int(fd)].pending += 1
    }

    func completeFileRead(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        var result: Result<Int, IOError>
        if res > 0 {
            slots.slots[Int(index)].progress += Int(res)
            let s = slots.slots[Int(index)]
            // Fewer bytes only at end of file: keep reading until EOF or full.
            if s.progress < s.length, submitFileIO(index, write: false) { return }
            result = .success(slots.slots[Int(index)].progress)
        } else if res == 0 {
            result = .success(slots.slots[Int(index)].progress)
        } else {
            if -res == EINTR || -res == EAGAIN, submitFileIO(index, write: false) { return }
            result = .failure(Self.error(res, "read"))
        }
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        finishCloseIfIdle(fd)
        if case .count(let done) = completion { done(result) }
    }

    // MARK: fdatasync

    /// Closes the file's current write epoch; the FSYNC SQE is submitted only
    /// when no write of this or an earlier epoch is in flight any more.
    public func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = file.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "fdatasync")); return
        }
        let covers = fds[Int(fd)].epoch
        fds[Int(fd)].epoch &+= 1
        let index = slots.allocate(.fsync, fd: fd, completion: .void(done))
        slots.slots[Int(index)].epoch = covers
        fds[Int(fd)].pending += 1
        if let sqe = sqeLinkedBehindLastWrite(fd) {
            io_uring_prep_fsync(sqe, fd, PEREGRINE_IORING_FSYNC_DATASYNC)
            sqe.pointee.user_data = slots.userData(index)
            slots.slots[Int(index)].linked = true
            linkedFsyncs += 1
        } else if let oldest = fds[Int(fd)].oldestWriteEpoch, oldest <= covers {
            fds[Int(fd)].waitingFsyncs.append(index)
        } else if !submitFsync(index) {
            fds[Int(fd)].pending -= 1
            fail(slots.release(index), Self.noSQE("fdatasync"))
        }
    }

    /// The next SQE, linked behind the last prepared one (IOSQE_IO_LINK),
    /// when that is this file's only write in flight and still unsubmitted;
    /// nil otherwise. Only an SQE taken without a flush may follow it: a
    /// flush in between would submit the write alone and cut the link.
    private func sqeLinkedBehindLastWrite(_ fd: Int32) -> UnsafeMutablePointer<io_uring_sqe>? {
        let epochs = fds[Int(fd)].writeEpochs
        guard linksFsyncToWrite, epochs.count == 1, epochs[0].count == 1, fds[Int(fd)].waitingFsyncs.isEmpty,
              lastFileWrite.fd == fd else { return nil }
        let sq = ring.pointee.sq
        let tail = sq.sqe_tail
        guard tail == lastFileWrite.tail, sq.sqe_head != tail, io_uring_sq_space_left(ring) >= 1,
              let next = io_uring_get_sqe(ring) else { return nil }
        let write = sq.sqes + Int((tail &- 1) & sq.ring_mask)
        write.pointee.flags |= UInt8(PEREGRINE_IOSQE_IO_LINK)
        return next
    }

    private func submitFsync(_ index: Int32) -> Bool {
        guard let sqe = nextSQE() else { return false }
        io_uring_prep_fsync(sqe, slots.slots[Int(index)].fd, PEREGRINE_IORING_FSYNC_DATASYNC)
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    /// Submits the waiting fsyncs whose earlier writes have all completed.
    private func releaseWaitingFsyncs(_ fd: Int32) {
        while let index = fds[Int(fd)].waitingFsyncs.first {
            if let oldest = fds[Int(fd)].oldestWriteEpoch, oldest <= slots.slots[Int(index)].epoch { return }
            fds[Int(fd)].waitingFsyncs.removeFirst()
            if !submitFsync(index) {
                fds[Int(fd)].pending -= 1
                fail(slots.release(index), Self.noSQE("fdatasync"))
            }
        }
    }

    func completeFsync(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        if slots.slots[Int(index)].linked && -res == ECANCELED && !fds[Int(fd)].closing {
            // Its write failed or was short (the rest is being written): the link
            // cancelled it, not a close. It waits for the file's writes like an unlinked one.
            slots.slots[Int(index)].linked = false
            let epoch = slots.slots[Int(index)].epoch
            if let oldest = fds[Int(fd)].oldestWriteEpoch, oldest <= epoch {
                let at = fds[Int(fd)].waitingFsyncs.firstIndex { slots.slots[Int($0)].epoch > epoch }
                fds[Int(fd)].waitingFsyncs.insert(index, at: at ?? fds[Int(fd)].waitingFsyncs.endIndex)
                return
            }
            if submitFsync(index) { return }
            fds[Int(fd)].pending -= 1
            fail(slots.release(index), Self.noSQE("fdatasync"))
            return
        }
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        finishCloseIfIdle(fd)
        guard case .void(let done) = completion else { return }
        done(res >= 0 ? .success(()) : .failure(Self.error(res, "fdatasync")))
    }

    /// Closes the file once its outstanding writes, reads and fsyncs have completed.
    public func closeFile(_ file: FileHandle) {
        let fd = file.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else { return }
        fds[Int(fd)].closing = true
        finishCloseIfIdle(fd)
    }
}
