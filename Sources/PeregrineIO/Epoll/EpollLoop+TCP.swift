#if canImport(Glibc)
import Glibc
#endif
import CLinux

extension EpollLoop {
    // MARK: Listen / accept

    public func listen(on address: SocketAddress, options: ListenOptions,
                       onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener {
        let listener = try Posix.makeListener(address, options: options, nonBlocking: true)
        do throws(IOError) {
            let s = try register(listener.fd, kind: .listener)
            s.onAccept = onAccept
        } catch {
            Glibc.close(listener.fd)
            throw error
        }
        return listener
    }

    public func closeListener(_ listener: Listener) {
        guard let s = openSlot(listener.fd), s.kind == .listener else { return }
        if let retry = s.acceptRetry { timers.cancel(retry) }
        s.reset()
        Glibc.close(listener.fd)
    }

    /// Accepts until EAGAIN (edge-triggered). Per-connection failures are
    /// skipped; descriptor exhaustion is reported and retried on a timer,
    /// since the pending connection will not raise another edge.
    func drainAccept(_ s: EpollSlot) {
        guard let onAccept = s.onAccept else { return }
        while true {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept4(s.fd, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                }
            }
            if fd < 0 {
                let e = errno
                switch e {
                case EAGAIN, EWOULDBLOCK:
                    return
                case EINTR, ECONNABORTED, EPROTO, EPERM, ENETDOWN, ENOPROTOOPT, EHOSTDOWN,
                     ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                    continue  // that connection is gone; the next may be fine
                default:
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM, …: report, keep listening, retry soon.
                    complete(.accepted(onAccept, .failure(IOError(.errno(e), "accept"))))
                    if s.acceptRetry == nil {
                        let token = s.token
                        s.acceptRetry = scheduleTimer(after: Listener.acceptRetryDelay) { [unowned self] in
                            guard let s = self.openSlot(s.fd), s.token == token else { return }
                            s.acceptRetry = nil
                            self.drainAccept(s)
                        }
                    }
                    return
                }
            }
            Posix.setNoDelay(fd)
            let peer = withUnsafePointer(to: &storage) { SocketAddress(storage: $0) }
            guard let peer, let local = Posix.localAddress(fd) else {
                Glibc.close(fd)
                continue
            }
            do throws(IOError) {
                _ = try register(fd, kind: .stream)
            } catch {
                Glibc.close(fd)
                complete(.accepted(onAccept, .failure(error)))
                continue
            }
            complete(.accepted(onAccept, .success(AcceptedConnection(socket: Socket(fd: fd), peer: peer, local: local))))
        }
    }

    // MARK: Connect

    public func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64,
                        _ done: @escaping (Result<Socket, IOError>) -> Void) {
        let fd: Int32
        do throws(IOError) {
            fd = try Posix.makeConnectingSocket(to: address, from: source, nonBlocking: true)
        } catch {
            complete(.connected(done, .failure(error)))
            return
        }
        var rc: Int32
        repeat {
            rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        } while rc != 0 && errno == EINTR
        if rc != 0 && errno != EINPROGRESS {
            let e = errno
            Glibc.close(fd)
            complete(.connected(done, .failure(IOError(.errno(e), "connect \(address)"))))
            return
        }
        let s: EpollSlot
        do throws(IOError) {
            s = try register(fd, kind: rc == 0 ? .stream : .connecting)
        } catch {
            Glibc.close(fd)
            complete(.connected(done, .failure(error)))
            return
        }
        if rc == 0 {
            complete(.connected(done, .success(Socket(fd: fd))))
            return
        }
        s.connectDone = done
        let token = s.token
        s.connectTimer = scheduleTimer(after: timeout) { [unowned self] in
            guard let s = self.openSlot(fd), s.token == token, s.kind == .connecting,
                  let done = s.connectDone else { return }
            s.reset()
            Glibc.close(fd)
            self.complete(.connected(done, .failure(IOError(.timedOut, "connect \(address)"))))
        }
    }

    func finishConnect(_ s: EpollSlot) {
        guard let done = s.connectDone else { return }
        let err = Posix.socketError(s.fd)
        if err == EINPROGRESS || err == EALREADY { return }
        if let t = s.connectTimer { timers.cancel(t) }
        s.connectTimer = nil
        s.connectDone = nil
        if err == 0 {
            s.kind = .stream
            complete(.connected(done, .success(Socket(fd: s.fd))))
        } else {
            let fd = s.fd
            s.reset()
            Glibc.close(fd)
            complete(.connected(done, .failure(IOError(.errno(err), "connect"))))
        }
    }

    // MARK: Receive

    public func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                        _ done: @escaping (Result<Int, IOError>) -> Void) {
        guard let s = openSlot(socket.fd), s.kind == .stream || s.kind == .datagram else {
            complete(.count(done, .failure(IOError(.errno(EBADF), "receive"))))
            return
        }
        if s.hasReceive {
            complete(.count(done, .failure(IOError(.invalidArgument("a receive is already pending on \(socket)"), "receive"))))
            return
        }
        s.receiveBuffer = buffer
        s.receiveDone = done
        attemptReceive(s)
    }

    /// Tries the parked receive once; leaves it parked on EAGAIN.
    func attemptReceive(_ s: EpollSlot) {
        guard s.readable else { return }  // parked until the next edge
        if let done = s.receiveDone {
            var n: Int
            repeat {
                n = Glibc.recv(s.fd, s.receiveBuffer.baseAddress, s.receiveBuffer.count, 0)
            } while n < 0 && errno == EINTR
            if n < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { s.readable = false; return }
                s.receiveDone = nil
                s.receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
                complete(.count(done, .failure(IOError(.errno(e), "receive"))))
            } else {
                s.receiveDone = nil
                s.receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
                complete(.count(done, .success(n)))
            }
        } else if let done = s.receiveFromDone {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            var n: Int
            repeat {
                n = withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.recvfrom(s.fd, s.receiveBuffer.baseAddress, s.receiveBuffer.count, 0, $0, &len)
                    }
                }
            } while n < 0 && errno == EINTR
            if n < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { s.readable = false; return }
                s.receiveFromDone = nil
                s.receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
                complete(.datagram(done, .failure(IOError(.errno(e), "receiveDatagram"))))
                return
            }
            s.receiveFromDone = nil
            s.receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            if let from = withUnsafePointer(to: &storage, { SocketAddress(storage: $0) }) {
                complete(.datagram(done, .success((n, from))))
            } else {
                complete(.datagram(done, .failure(IOError(.errno(EAFNOSUPPORT), "receiveDatagram"))))
            }
        }
    }

    // MARK: Send

    public func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer,
                     _ done: @escaping (Result<Void, IOError>) -> Void) {
        enqueueWrite(socket, EpollWrite(kind: .bytes, base: buffer.baseAddress, remaining: buffer.count,
                                        vector: [], vectorIndex: 0, vectorOffset: 0, target: nil, done: done),
                     operation: "send")
    }

    public func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer],
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        var total = 0
        for b in buffers { total += b.count }
        enqueueWrite(socket, EpollWrite(kind: .vector, base: nil, remaining: total,
                                        vector: buffers, vectorIndex: 0, vectorOffset: 0, target: nil, done: done),
                     operation: "sendv")
    }

    public func sendFile(_ socket: Socket, _ file: FileHandle, offset: Int64, count: Int,
                         _ done: @escaping (Result<Void, IOError>) -> Void) {
        enqueueWrite(socket, EpollWrite(kind: .file, base: nil, remaining: count, vector: [], vectorIndex: 0,
                                        vectorOffset: 0, target: nil, done: done, file: file.fd, fileOffset: offset),
                     operation: "sendFile")
    }

    func enqueueWrite(_ socket: Socket, _ write: EpollWrite, operation: StaticString) {
        guard let s = openSlot(socket.fd), s.kind == .stream || s.kind == .datagram else {
            complete(.void(write.done, .failure(IOError(.errno(EBADF), "\(operation)"))))
            return
        }
        s.writes.append(write)
        if s.writes.count - s.writeHead == 1 { flushWrites(s) }  // nothing ahead of it: try now
    }

    /// Writes queued data until the queue is empty or the socket would block.
    func flushWrites(_ s: EpollSlot) {
        guard s.writable else { return }  // parked until the next EPOLLOUT edge
        while s.writeHead < s.writes.count {
            let outcome = attemptWrite(s.fd, &s.writes[s.writeHead])
            switch outcome {
            case .wouldBlock:
                s.writable = false
                return
            case .finished(let result):
                let done = s.writes[s.writeHead].done
                s.writeHead += 1
                complete(.void(done, result))
            }
        }
        s.writes.removeAll(keepingCapacity: true)
        s.writeHead = 0
        if s.shutdownAfterWrites {
            s.shutdownAfterWrites = false
            _ = Glibc.shutdown(s.fd, Int32(SHUT_WR))
        }
    }

    enum WriteOutcome {
        case wouldBlock
        case finished(Result<Void, IOError>)
    }

    /// One write attempt loop for the op at the head of the queue: keeps
    /// writing while the kernel takes bytes, records partial progress.
    func attemptWrite(_ fd: Int32, _ w: inout EpollWrite) -> WriteOutcome {
        switch w.kind {
        case .bytes:
            while w.remaining > 0 {
                let n = Glibc.send(fd, w.base, w.remaining, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "send")))
                }
                w.remaining -= n
                w.base = w.base.map { $0 + n }
            }
            return .finished(.success(()))
        case .file:
            while w.remaining > 0 {
                var offset = off_t(w.fileOffset)
                let n = Glibc.sendfile(fd, w.file, &offset, w.remaining)
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "sendFile")))
                }
                // 0 with bytes still owed: the file ends early (truncated under us).
                if n == 0 { return .finished(.failure(IOError(.errno(EIO), "sendFile: file shorter than the range"))) }
                w.remaining -= n
                w.fileOffset += Int64(n)
            }
            return .finished(.success(()))
        case .vector:
            while w.remaining > 0 {
                // Fill the scratch iovecs from the current position.
                var count = 0
                var i = w.vectorIndex
                var offset = w.vectorOffset
                while i < w.vector.count && count < iovecCapacity {
                    let b = w.vector[i]
                    if b.count > offset, let base = b.baseAddress {
                        iovecs[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base + offset),
                                              iov_len: b.count - offset)
                        count += 1
                    }
                    i += 1
                    offset = 0
                }
                if count == 0 { return .finished(.success(())) }
                var msg = msghdr()
                msg.msg_iov = iovecs
                msg.msg_iovlen = count
                let n = Glibc.sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "sendv")))
                }
                w.remaining -= n
                // Advance (index, offset) by n bytes.
                var left = n
                while left > 0 && w.vectorIndex < w.vector.count {
                    let avail = w.vector[w.vectorIndex].count - w.vectorOffset
                    if left < avail {
                        w.vectorOffset += left
                        left = 0
                    } else {
                        left -= avail
                        w.vectorIndex += 1
                        w.vectorOffset = 0
                    }
                }
            }
            return .finished(.success(()))
        case .datagram:
            guard let target = w.target else { return .finished(.failure(IOError(.errno(EDESTADDRREQ), "sendDatagram"))) }
            while true {
                let n = target.withSockAddr { Glibc.sendto(fd, w.base, w.remaining, Int32(MSG_NOSIGNAL), $0, $1) }
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "sendDatagram \(target)")))
                }
                return .finished(.success(()))
            }
        }
    }

    // MARK: Half-close / close

    public func shutdownWrite(_ socket: Socket) {
        guard let s = openSlot(socket.fd), s.kind == .stream else { return }
        if s.writeHead < s.writes.count {
            s.shutdownAfterWrites = true  // FIN after the queued bytes, not in the middle of them
        } else {
            _ = Glibc.shutdown(socket.fd, Int32(SHUT_WR))
        }
    }

    public func close(_ socket: Socket) {
        guard let s = openSlot(socket.fd), s.kind == .stream || s.kind == .datagram else { return }
        cancelOperations(s)
        s.reset()
        Glibc.close(socket.fd)
    }

    /// Every parked operation of `s` completes with `.cancelled` (later in the turn).
    func cancelOperations(_ s: EpollSlot) {
        if let done = s.receiveDone {
            complete(.count(done, .failure(IOError(.cancelled, "receive"))))
        }
        if let done = s.receiveFromDone {
            complete(.datagram(done, .failure(IOError(.cancelled, "receiveDatagram"))))
        }
        s.receiveDone = nil
        s.receiveFromDone = nil
        if s.writeHead < s.writes.count {
            for i in s.writeHead..<s.writes.count {
                let op: StaticString = s.writes[i].kind == .datagram ? "sendDatagram" : "send"
                complete(.void(s.writes[i].done, .failure(IOError(.cancelled, "\(op)"))))
            }
        }
        s.writes.removeAll(keepingCapacity: true)
        s.writeHead = 0
    }

    public func localAddress(of socket: Socket) -> SocketAddress? {
        Posix.localAddress(socket.fd)
    }

    public func peerAddress(of socket: Socket) -> SocketAddress? {
        Posix.peerAddress(socket.fd)
    }

    // MARK: UDP

    public func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket {
        let fd = try Posix.makeUDPSocket(boundTo: address, nonBlocking: true)
        do throws(IOError) {
            _ = try register(fd, kind: .datagram)
        } catch {
            Glibc.close(fd)
            throw error
        }
        return Socket(fd: fd)
    }

    public func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer,
                             _ done: @escaping (Result<Void, IOError>) -> Void) {
        guard let s = openSlot(socket.fd), s.kind == .datagram else {
            complete(.void(done, .failure(IOError(.errno(EBADF), "sendDatagram"))))
            return
        }
        s.writes.append(EpollWrite(kind: .datagram, base: buffer.baseAddress, remaining: buffer.count,
                                   vector: [], vectorIndex: 0, vectorOffset: 0, target: address, done: done))
        if s.writes.count - s.writeHead == 1 { flushWrites(s) }
    }

    public func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                                _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void) {
        guard let s = openSlot(socket.fd), s.kind == .datagram else {
            complete(.datagram(done, .failure(IOError(.errno(EBADF), "receiveDatagram"))))
            return
        }
        if s.hasReceive {
            complete(.datagram(done, .failure(IOError(.invalidArgument("a receive is already pending on \(socket)"), "receiveDatagram"))))
            return
        }
        s.receiveBuffer = buffer
        s.receiveFromDone = done
        attemptReceive(s)
    }
}
