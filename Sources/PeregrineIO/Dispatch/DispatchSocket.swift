#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// Per-descriptor state of the Dispatch loop: the operations waiting on the
/// socket and the (lazily created) read and write sources that wake them.
/// Touched only on the loop queue.
final class DispatchSocket {
    enum Role { case stream, listener, datagram }

    enum Receive {
        case stream(UnsafeMutableRawBufferPointer, (Result<Int, IOError>) -> Void)
        case datagram(UnsafeMutableRawBufferPointer, (Result<(Int, SocketAddress), IOError>) -> Void)
    }

    /// One queued send: a single buffer (`send`, `sendDatagram`) or a gather
    /// list (`sendv`), with the progress made so far.
    struct Send {
        var single: UnsafeRawBufferPointer
        var multi: [UnsafeRawBufferPointer]?
        var index = 0          // current buffer in `multi`
        var offset = 0         // bytes of the current buffer already written
        var to: SocketAddress? // datagram destination
        let done: (Result<Void, IOError>) -> Void
        /// A file range (sendFile): the file, its next byte, and the bytes still to send.
        var file: Int32 = -1
        var fileOffset: Int64 = 0
        var fileRemaining = 0
    }

    let fd: Int32
    let role: Role
    var closed = false

    var readSource: DispatchSourceRead?
    var readSuspended = true      // a fresh source is inactive: counts as suspended
    var writeSource: DispatchSourceWrite?
    var writeSuspended = true
    /// Sources not yet through their cancel handler; the fd is closed when this reaches 0.
    var liveSources = 0

    var receive: Receive?
    var sends: [Send] = []
    var sendHead = 0
    var shutdownAfterSends = false

    var connectDone: ((Result<Socket, IOError>) -> Void)?
    var connectTimer: TimerHandle?

    var onAccept: ((Result<AcceptedConnection, IOError>) -> Void)?

    init(fd: Int32, role: Role) {
        self.fd = fd
        self.role = role
    }

    var hasPendingSends: Bool { sendHead < sends.count }

    // MARK: Sources

    func wantRead(_ loop: DispatchLoop) {
        // After close the sources are cancelled and resumed for good.
        if closed { return }
        if readSource == nil {
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
            s.setEventHandler { [weak loop, weak self] in
                guard let loop, let self else { return }
                loop.turn { loop.readable(self) }
            }
            s.setCancelHandler { [self] in sourceCancelled() }
            liveSources += 1
            readSource = s
        }
        if readSuspended, let s = readSource {
            readSuspended = false
            s.resume()
        }
    }

    func idleRead() {
        // After close the sources are cancelled and resumed for good.
        if closed { return }
        if !readSuspended, let s = readSource {
            readSuspended = true
            s.suspend()
        }
    }

    func wantWrite(_ loop: DispatchLoop) {
        // After close the sources are cancelled and resumed for good.
        if closed { return }
        if writeSource == nil {
            let s = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: loop.queue)
            s.setEventHandler { [weak loop, weak self] in
                guard let loop, let self else { return }
                loop.turn { loop.writable(self) }
            }
            s.setCancelHandler { [self] in sourceCancelled() }
            liveSources += 1
            writeSource = s
        }
        if writeSuspended, let s = writeSource {
            writeSuspended = false
            s.resume()
        }
    }

    func idleWrite() {
        // After close the sources are cancelled and resumed for good.
        if closed { return }
        if !writeSuspended, let s = writeSource {
            writeSuspended = true
            s.suspend()
        }
    }

    /// Cancels both sources and closes the descriptor once libdispatch has
    /// let go of it (immediately when no source was ever made).
    func cancelSources() {
        closed = true
        if liveSources == 0 {
            Glibc.close(fd)
            return
        }
        // Cancel, then resume: a suspended or inactive source must never be
        // released, and its cancel handler only runs once it is resumed.
        if let s = readSource {
            s.cancel()
            if readSuspended { readSuspended = false; s.resume() }
        }
        if let s = writeSource {
            s.cancel()
            if writeSuspended { writeSuspended = false; s.resume() }
        }
    }

    private func sourceCancelled() {
        liveSources -= 1
        if liveSources == 0 {
            Glibc.close(fd)
            // Break the source -> handler -> self cycles.
            readSource = nil
            writeSource = nil
        }
    }
}
