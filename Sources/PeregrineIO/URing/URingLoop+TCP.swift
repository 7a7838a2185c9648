#if canImport(Glibc)
import Glibc
#endif
import CURing

/// Largest byte count handed to one SQE (the SQE length field is 32 bits).
private let maxChunk = 1 << 30

extension URingLoop {
    // MARK: Listen / accept

    public func listen(on address: SocketAddress, options: ListenOptions,
                       onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener {
        // Blocking descriptors: io_uring arms its own poll; O_NONBLOCK would make
        // it hand EAGAIN back instead.
        let listener = try Posix.makeListener(address, options: options, nonBlocking: false)
        registerFD(listener.fd)
        let index = slots.allocate(.accept, fd: listener.fd, completion: .accept(onAccept))
        fds[Int(listener.fd)].acceptSlot = index
        fds[Int(listener.fd)].pending = 1
        armAccept(index)
        return listener
    }

    func armAccept(_ index: Int32) {
        let fd = slots.slots[Int(index)].fd
        guard let sqe = nextSQE() else {
            // Ring not started and SQ full: retry on the first turn.
            deferred.append { [weak self] in self?.rearmAcceptIfOpen(index, fd: fd) }
            return
        }
        let flags = Int32(SOCK_CLOEXEC.rawValue)
        if multishotAccept {
            io_uring_prep_multishot_accept(sqe, fd, nil, nil, flags)
        } else {
            io_uring_prep_accept(sqe, fd, nil, nil, flags)
        }
        sqe.pointee.user_data = slots.userData(index)
        slots.slots[Int(index)].armed = true
    }

    private func rearmAcceptIfOpen(_ index: Int32, fd: Int32) {
        let s = state(fd)
        guard !s.closing, s.acceptSlot == index, slots.slots[Int(index)].op == .accept,
              !slots.slots[Int(index)].armed else { return }
        armAccept(index)
    }

    func completeAccept(_ index: Int32, res: Int32, flags: UInt32) {
        let lfd = slots.slots[Int(index)].fd
        let more = flags & PEREGRINE_IORING_CQE_F_MORE != 0
        if !more { slots.slots[Int(index)].armed = false }
        if case .accept(let onAccept) = slots.slots[Int(index)].completion, !fds[Int(lfd)].closing {
            if res >= 0 {
                let fd = res
                if ensureFD(fd) { registerFD(fd) }
                Posix.setNoDelay(fd)
                if let peer = Posix.peerAddress(fd), let local = Posix.localAddress(fd) {
                    onAccept(.success(AcceptedConnection(socket: Socket(fd: fd), peer: peer, local: local)))
                } else {
                    // Reset before we saw it: not a connection the caller can use.
                    let e = errno
                    Glibc.close(fd)
                    onAccept(.failure(IOError(.errno(e), "accept")))
                }
            } else if -res == EINVAL && multishotAccept {
                multishotAccept = false    // kernel without multishot accept: re-arm single-shot below
            } else if -res != ECANCELED {
                onAccept(.failure(IOError(.errno(-res), "accept")))
            }
        } else if res >= 0 {
            Glibc.close(res)               // accepted after closeListener: drop it
        }
        guard !more else { return }
        // The multishot accept ended (error, cancel, or single-shot mode).
        if fds[Int(lfd)].closing || fds[Int(lfd)].acceptSlot != index {
            releaseAcceptSlot(index, listener: lfd)
        } else if res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM {
            // Out of descriptors or memory: back off instead of spinning on the same error.
            scheduleTimer(after: Listener.acceptRetryDelay) { [weak self] in self?.rearmAcceptIfOpen(index, fd: lfd) }
        } else {
            armAccept(index)
        }
    }

    private func releaseAcceptSlot(_ index: Int32, listener fd: Int32) {
        _ = slots.release(index)
        fds[Int(fd)].acceptSlot = -1
        fds[Int(fd)].pending -= 1
        finishCloseIfIdle(fd)
    }

    public func closeListener(_ listener: Listener) {
        let fd = listener.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else { return }
        fds[Int(fd)].closing = true
        let index = fds[Int(fd)].acceptSlot
        if index >= 0 && slots.slots[Int(index)].armed {
            cancelAll(on: fd)   // the accept CQE (without F_MORE) releases the slot
        } else if index >= 0 {
            releaseAcceptSlot(index, listener: fd)
        } else {
            finishCloseIfIdle(fd)
        }
    }

    // MARK: Connect

    public func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64,
                        _ done: @escaping (Result<Socket, IOError>) -> Void) {
        let fd: Int32
        do {
            fd = try Posix.makeConnectingSocket(to: address, from: source, nonBlocking: false)
        } catch {
            fail(.socket(done), error)
            return
        }
        registerFD(fd)
        let linked = timeout > 0
        guard reserveSQEs(linked ? 2 : 1), let sqe = nextSQE() else {
            Glibc.close(fd)
            fds[Int(fd)] = URingFDState()
            fail(.socket(done), Self.noSQE("connect"))
            return
        }
        let index = slots.allocate(.connect, fd: fd, completion: .socket(done))
        let aux = slots.aux(index)
        let length = address.withSockAddr { sa, len -> socklen_t in
            UnsafeMutableRawPointer(aux.address).copyMemory(from: sa, byteCount: Int(len))
            return len
        }
        aux.address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            io_uring_prep_connect(sqe, fd, $0, length)
        }
        sqe.pointee.user_data = slots.userData(index)
        fds[Int(fd)].pending = 1
        if linked, let timeoutSQE = nextSQE() {
            sqe.pointee.flags |= UInt8(PEREGRINE_IOSQE_IO_LINK)
            aux.timeout.pointee.tv_sec = Int64(timeout / 1_000_000_000)
            aux.timeout.pointee.tv_nsec = Int64(timeout % 1_000_000_000)
            io_uring_prep_link_timeout(timeoutSQE, aux.timeout, 0)
            timeoutSQE.pointee.user_data = URingSlotTable.ignoredUserData
        }
    }

    func completeConnect(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        let completion = slots.release(index)
        guard case .socket(let done) = completion else { return }
        fds[Int(fd)].pending = 0
        if res >= 0 {
            done(.success(Socket(fd: fd)))
        } else {
            fds[Int(fd)] = URingFDState()
            Glibc.close(fd)
            // ECANCELED here can only come from the linked timeout (the socket
            // was never handed out, so nobody could close it).
            if -res == ECANCELED || -res == ETIME {
                done(.failure(IOError(.timedOut, "connect")))
            } else {
                done(.failure(IOError(.errno(-res), "connect")))
            }
        }
    }

    // MARK: Receive

    public func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                        _ done: @escaping (Result<Int, IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.count(done), IOError(.cancelled, "receive")); return
        }
        guard let sqe = nextSQE() else { fail(.count(done), Self.noSQE("receive")); return }
        let index = slots.allocate(.receive, fd: fd, completion: .count(done))
        io_uring_prep_recv(sqe, fd, buffer.baseAddress, min(buffer.count, maxChunk), 0)
        sqe.pointee.user_data = slots.userData(index)
        fds[Int(fd)].pending += 1
    }

    func completeReceive(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        let closing = fds[Int(fd)].closing
        finishCloseIfIdle(fd)
        guard case .count(let done) = completion else { return }
        if closing {
            done(.failure(IOError(.cancelled, "receive")))
        } else if res >= 0 {
            done(.success(Int(res)))
        } else {
            done(.failure(Self.error(res, "receive")))
        }
    }

    // MARK: Send

    public func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer,
                     _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "send")); return
        }
        let index = slots.allocate(.send, fd: fd, completion: .void(done))
        slots.slots[Int(index)].buffer = UnsafeMutableRawPointer(mutating: buffer.baseAddress)
        slots.slots[Int(index)].length = buffer.count
        guard submitSend(index) else {
            fail(slots.release(index), Self.noSQE("send")); return
        }
        fds[Int(fd)].pending += 1
        fds[Int(fd)].pendingSends += 1
    }

    private func submitSend(_ index: Int32) -> Bool {
        guard let sqe = nextSQE() else { return false }
        let s = slots.slots[Int(index)]
        let remaining = min(s.length - s.progress, maxChunk)
        io_uring_prep_send(sqe, s.fd, s.buffer.map { UnsafeRawPointer($0 + s.progress) }, remaining,
                           Int32(MSG_NOSIGNAL))
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    func completeSend(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        if res >= 0 && !fds[Int(fd)].closing {
            slots.slots[Int(index)].progress += Int(res)
            let s = slots.slots[Int(index)]
            if s.progress < s.length {
                if submitSend(index) { return }          // partial write: send the rest
                finishSend(index, fd: fd, .failure(Self.noSQE("send")))
                return
            }
            finishSend(index, fd: fd, .success(()))
        } else {
            finishSend(index, fd: fd, .failure(fds[Int(fd)].closing
                ? IOError(.cancelled, "send") : Self.error(res, "send")))
        }
    }

    /// Releases a send's slot and completes it (also the end of `sendFile`'s splices).
    func finishSend(_ index: Int32, fd: Int32, _ result: Result<Void, IOError>) {
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        fds[Int(fd)].pendingSends -= 1
        if fds[Int(fd)].pendingSends == 0 && fds[Int(fd)].shutdownAfterSends && !fds[Int(fd)].closing {
            fds[Int(fd)].shutdownAfterSends = false
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        }
        finishCloseIfIdle(fd)
        if case .void(let done) = completion { done(result) }
    }

    // MARK: Gather send

    public func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer],
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "sendv")); return
        }
        let index = slots.allocate(.sendv, fd: fd, completion: .void(done))
        let aux = slots.aux(index)
        aux.reserveIOVs(buffers.count)
        var total = 0
        var count = 0
        for b in buffers where b.count > 0 {
            aux.iovs[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)
            count += 1
            total += b.count
        }
        aux.iovCount = count
        aux.iovStart = 0
        slots.slots[Int(index)].length = total
        if total == 0 {
            _ = slots.release(index)
            deferred.append { done(.success(())) }
            return
        }
        guard submitSendv(index, aux) else {
            fail(slots.release(index), Self.noSQE("sendv")); return
        }
        fds[Int(fd)].pending += 1
        fds[Int(fd)].pendingSends += 1
    }

    private func submitSendv(_ index: Int32, _ aux: URingSlotAux) -> Bool {
        guard let sqe = nextSQE() else { return false }
        let msg = aux.msg
        msg.pointee = msghdr()
        msg.pointee.msg_iov = aux.iovs + aux.iovStart
        msg.pointee.msg_iovlen = min(aux.iovCount - aux.iovStart, 1024 /* IOV_MAX */)
        io_uring_prep_sendmsg(sqe, slots.slots[Int(index)].fd, msg, UInt32(MSG_NOSIGNAL))
        sqe.pointee.user_data = slots.userData(index)
        return true
    }

    func completeSendv(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        guard res >= 0 && !fds[Int(fd)].closing else {
            finishSend(index, fd: fd, .failure(fds[Int(fd)].closing
                ? IOError(.cancelled, "sendv") : Self.error(res, "sendv")))
            return
        }
        slots.slots[Int(index)].progress += Int(res)
        if slots.slots[Int(index)].progress >= slots.slots[Int(index)].length {
            finishSend(index, fd: fd, .success(()))
            return
        }
        // Partial: skip the iovecs fully sent, trim the first partly sent one.
        let aux = slots.aux(index)
        var sent = Int(res)
        while aux.iovStart < aux.iovCount && sent >= aux.iovs[aux.iovStart].iov_len {
            sent -= aux.iovs[aux.iovStart].iov_len
            aux.iovStart += 1
        }
        if sent > 0 && aux.iovStart < aux.iovCount {
            aux.iovs[aux.iovStart].iov_base += sent
            aux.iovs[aux.iovStart].iov_len -= sent
        }
        if !submitSendv(index, aux) { finishSend(index, fd: fd, .failure(Self.noSQE("sendv"))) }
    }

    // MARK: Shutdown / close

    public func shutdownWrite(_ socket: Socket) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else { return }
        if fds[Int(fd)].pendingSends > 0 {
            // The FIN must follow the data already handed to send/sendv.
            fds[Int(fd)].shutdownAfterSends = true
        } else {
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        }
    }

    public func close(_ socket: Socket) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else { return }
        fds[Int(fd)].closing = true
        if fds[Int(fd)].pending > 0 {
            cancelAll(on: fd)
        } else {
            finishCloseIfIdle(fd)
        }
    }

    public func localAddress(of socket: Socket) -> SocketAddress? { Posix.localAddress(socket.fd) }
    public func peerAddress(of socket: Socket) -> SocketAddress? { Posix.peerAddress(socket.fd) }
}
