#if canImport(Glibc)
import Glibc
#endif
import CURing

/// The two ends of a pipe that sendFile splices through.
struct URingSplicePipe {
    var read: Int32 = -1
    var write: Int32 = -1
    /// Bytes one fill may put in it (its capacity).
    var capacity = 0

    func close() {
        if read >= 0 { Glibc.close(read) }
        if write >= 0 { Glibc.close(write) }
    }
}

/// F_SETPIPE_SZ (Linux fcntl.h; not exported by Glibc's module).
private let setPipeSize: Int32 = 1031
/// What a pipe is asked to hold: a 100 KB body in one round, and 32
/// connections' pipes well under the per-user pipe page limit (64 MB).
private let wantedPipeCapacity: Int32 = 256 * 1024

/// sendFile on io_uring: IORING_OP_SPLICE from the file into a pipe, then
/// from the pipe into the socket, repeated until the range is sent. The
/// bytes stay in the page cache (the pipe holds references to its pages),
/// so no user-space copy is made. Rounds are sequential (fill, then drain),
/// not linked: a short fill would break a link and the drain's length must
/// be what the fill put in. The kernel runs both splices in its io-wq
/// workers (splice cannot be tried without blocking), which is why the
/// socket may stay a blocking descriptor here.
///
/// Cancellation: `close` cancels by the socket's fd, which is the drain's
/// output fd; a fill (page cache to pipe) completes on its own and the
/// send then fails with `.cancelled`. A pipe that may still hold bytes
/// after a failure is closed, never reused.
extension URingLoop {
    public func sendFile(_ socket: Socket, _ file: FileHandle, offset: Int64, count: Int,
                         _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "sendFile")); return
        }
        if count == 0 { deferred.append { done(.success(())) }; return }
        guard let pipe = takeSplicePipe() else {
            fail(.void(done), IOError(.errno(errno), "sendFile: pipe")); return
        }
        let index = slots.allocate(.sendFile, fd: fd, completion: .void(done))
        slots.slots[Int(index)].spliceFile = file.fd
        slots.slots[Int(index)].splicePipe = pipe
        slots.slots[Int(index)].offset = offset
        slots.slots[Int(index)].length = count
        guard submitFill(index) else {
            splicePipes.append(pipe)
            fail(slots.release(index), Self.noSQE("sendFile")); return
        }
        fds[Int(fd)].pending += 1
        fds[Int(fd)].pendingSends += 1
    }

    private func takeSplicePipe() -> URingSplicePipe? {
        if let p = splicePipes.popLast() { return p }
        var ends: (Int32, Int32) = (-1, -1)
        let r = withUnsafeMutablePointer(to: &ends) {
            $0.withMemoryRebound(to: Int32.self, capacity: 2) { Glibc.pipe($0) }
        }
        guard r == 0 else { return nil }
        // pipe2 is not exported without _GNU_SOURCE. A spawn on another thread between the two calls
        // could inherit the pipe: a window of microseconds, once per pooled pipe.
        _ = fcntl(ends.0, F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends.1, F_SETFD, FD_CLOEXEC)
        // Smaller than asked (the per-user limit reached) still works: more rounds.
        let size = fcntl(ends.1, setPipeSize, wantedPipeCapacity)
        let capacity = size > 0 ? Int(size) : Int(fcntl(ends.1, 1032 /* F_GETPIPE_SZ */))
        return URingSplicePipe(read: ends.0, write: ends.1, capacity: max(capacity, 4096))
    }

    private func submitFill(_ index: Int32) -> Bool {
        guard let sqe = nextSQE() else { return false }
        let s = slots.slots[Int(index)]
        let n = UInt32(min(s.length - s.progress, s.splicePipe.capacity))
        io_uring_prep_splice(sqe, s.spliceFile, s.offset &+ Int64(s.progress), s.splicePipe.write, -1, n, 0)
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    private func submitDrain(_ index: Int32) -> Bool {
        guard let sqe = nextSQE() else { return false }
        let s = slots.slots[Int(index)]
        io_uring_prep_splice(sqe, s.splicePipe.read, -1, s.fd, -1, UInt32(s.inPipe), 0)
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    func completeSendFile(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        let draining = slots.slots[Int(index)].inPipe > 0
        if fds[Int(fd)].closing {
            finishSendFile(index, fd: fd, .failure(IOError(.cancelled, "sendFile")), pipeEmpty: false)
            return
        }
        if res < 0 {
            finishSendFile(index, fd: fd, .failure(Self.error(res, "sendFile")), pipeEmpty: !draining)
            return
        }
        if draining {
            slots.slots[Int(index)].inPipe -= Int(res)
            slots.slots[Int(index)].progress += Int(res)
            if res == 0 {
                finishSendFile(index, fd: fd, .failure(IOError(.errno(EPIPE), "sendFile")), pipeEmpty: false)
                return
            }
        } else {
            if res == 0 {
                // The file ends before the range does (truncated under us).
                finishSendFile(index, fd: fd, .failure(IOError(.errno(EIO), "sendFile: file shorter than the range")),
                               pipeEmpty: true)
                return
            }
            slots.slots[Int(index)].inPipe = Int(res)
        }
        let s = slots.slots[Int(index)]
        if s.inPipe > 0 {
            if submitDrain(index) { return }
        } else if s.progress < s.length {
            if submitFill(index) { return }
        } else {
            finishSendFile(index, fd: fd, .success(()), pipeEmpty: true)
            return
        }
        finishSendFile(index, fd: fd, .failure(Self.noSQE("sendFile")), pipeEmpty: s.inPipe == 0)
    }

    private func finishSendFile(_ index: Int32, fd: Int32, _ result: Result<Void, IOError>, pipeEmpty: Bool) {
        let pipe = slots.slots[Int(index)].splicePipe
        slots.slots[Int(index)].splicePipe = URingSplicePipe()
        slots.slots[Int(index)].spliceFile = -1
        if pipeEmpty { splicePipes.append(pipe) } else { pipe.close() }
        finishSend(index, fd: fd, result)
    }
}
