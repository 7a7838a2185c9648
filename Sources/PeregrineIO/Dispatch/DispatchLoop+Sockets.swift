#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// glibc's accept4 (Glibc's module map hides it behind _GNU_SOURCE).
@_silgen_name("accept4")
private func peregrineAccept4(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>?,
                              _ len: UnsafeMutablePointer<socklen_t>?, _ flags: Int32) -> Int32

extension DispatchLoop {
    // MARK: Socket table

    func register(_ s: DispatchSocket) {
        let i = Int(s.fd)
        if i >= sockets.count {
            sockets.append(contentsOf: repeatElement(nil, count: max(i + 1 - sockets.count, sockets.count)))
        }
        sockets[i] = s
    }

    @inline(__always)
    func lookup(_ fd: Int32) -> DispatchSocket? {
        let i = Int(fd)
        guard i >= 0 && i < sockets.count else { return nil }
        return sockets[i]
    }

    @inline(__always)
    static func isWouldBlock(_ e: Int32) -> Bool { e == EAGAIN || e == EWOULDBLOCK }

    // MARK: Listen / accept

    public func listen(on address: SocketAddress, options: ListenOptions,
                       onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener {
        let listener = try Posix.makeListener(address, options: options, nonBlocking: true)
        let s = DispatchSocket(fd: listener.fd, role: .listener)
        s.onAccept = onAccept
        register(s)
        s.wantRead(self)
        return listener
    }

    public func closeListener(_ listener: Listener) {
        guard let s = lookup(listener.fd), s.role == .listener else { return }
        sockets[Int(listener.fd)] = nil
        s.onAccept = nil
        s.cancelSources()
    }

    /// Drains the accept queue (the listener's read source fired).
    private func acceptAll(_ s: DispatchSocket) {
        while !s.closed, let onAccept = s.onAccept {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    peregrineAccept4(s.fd, $0, &len, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
                }
            }
            if fd < 0 {
                let e = errno
                if DispatchLoop.isWouldBlock(e) { return }
                if e == EINTR || e == ECONNABORTED { continue }
                onAccept(.failure(IOError(.errno(e), "accept")))
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the read source is level
                // triggered and would fire again at once, spinning on the same
                // error. Pause it and retry after a short while, as epoll and
                // io_uring do.
                s.idleRead()
                scheduleTimer(after: Listener.acceptRetryDelay) { [weak self, weak s] in
                    guard let self, let s, !s.closed, s.onAccept != nil else { return }
                    s.wantRead(self)
                }
                return
            }
            Posix.setNoDelay(fd)
            guard let peer = withUnsafePointer(to: &storage, { SocketAddress(storage: $0) }),
                  let local = Posix.localAddress(fd) else {
                Glibc.close(fd)
                continue
            }
            let c = DispatchSocket(fd: fd, role: .stream)
            register(c)
            onAccept(.success(AcceptedConnection(socket: Socket(fd: fd), peer: peer, local: local)))
        }
    }

    // MARK: Connect

    public func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64,
                        _ done: @escaping (Result<Socket, IOError>) -> Void) {
        let fd: Int32
        do {
            fd = try Posix.makeConnectingSocket(to: address, from: source, nonBlocking: true)
        } catch {
            complete(.socket(done, .failure(error)))
            return
        }
        var rc: Int32
        repeat {
            rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        } while rc != 0 && errno == EINTR
        if rc == 0 {
            register(DispatchSocket(fd: fd, role: .stream))
            complete(.socket(done, .success(Socket(fd: fd))))
            return
        }
        let e = errno
        guard e == EINPROGRESS else {
            Glibc.close(fd)
            complete(.socket(done, .failure(IOError(.errno(e), "connect \(address)"))))
            return
        }
        let s = DispatchSocket(fd: fd, role: .stream)
        s.connectDone = done
        register(s)
        s.connectTimer = scheduleTimer(after: timeout) { [weak self, weak s] in
            guard let self, let s, !s.closed, let done = s.connectDone else { return }
            s.connectDone = nil
            s.connectTimer = nil
            self.discard(s)
            done(.failure(IOError(.timedOut, "connect \(address)")))
        }
        s.wantWrite(self)
    }

    /// The write source fired on a connecting socket.
    private func finishConnect(_ s: DispatchSocket) {
        guard let done = s.connectDone else { return }
        s.connectDone = nil
        if let t = s.connectTimer { cancelTimer(t); s.connectTimer = nil }
        let e = Posix.socketError(s.fd)
        if e != 0 {
            discard(s)
            done(.failure(IOError(.errno(e), "connect")))
            return
        }
        if !s.hasPendingSends { s.idleWrite() }
        done(.success(Socket(fd: s.fd)))
    }

    /// Forgets a socket nobody else knows about yet and closes it.
    private func discard(_ s: DispatchSocket) {
        if lookup(s.fd) === s { sockets[Int(s.fd)] = nil }
        s.cancelSources()
    }

    // MARK: Receive

    public func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                        _ done: @escaping (Result<Int, IOError>) -> Void) {
        guard let s = lookup(socket.fd), s.role != .listener else {
            complete(.count(done, .failure(IOError(.errno(EBADF), "receive"))))
            return
        }
        guard s.receive == nil else {
            complete(.count(done, .failure(IOError(.invalidArgument("a receive is already pending on \(socket)"), "receive"))))
            return
        }
        // Eager attempt: data is often already there.
        let r = Self.recvOnce(s.fd, buffer)
        if r != -Int(EAGAIN) {
            complete(.count(done, r >= 0 ? .success(r) : .failure(IOError(.errno(Int32(truncatingIfNeeded: -r)), "receive"))))
            return
        }
        s.receive = .stream(buffer, done)
        s.wantRead(self)
    }

    public func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                                _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void) {
        guard let s = lookup(socket.fd), s.role == .datagram else {
            complete(.datagram(done, .failure(IOError(.errno(EBADF), "receiveDatagram"))))
            return
        }
        guard s.receive == nil else {
            complete(.datagram(done, .failure(IOError(.invalidArgument("a receive is already pending on \(socket)"), "receiveDatagram"))))
            return
        }
        if let r = Self.recvFromOnce(s.fd, buffer) {
            complete(.datagram(done, r))
            return
        }
        s.receive = .datagram(buffer, done)
        s.wantRead(self)
    }

    /// recv: bytes, or -errno (-EAGAIN: not ready).
    private static func recvOnce(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = Glibc.recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            return DispatchLoop.isWouldBlock(e) ? -Int(EAGAIN) : -Int(e)
        }
    }

    /// recvfrom: the result, or nil when not ready.
    private static func recvFromOnce(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Result<(Int, SocketAddress), IOError>? {
        while true {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.recvfrom(fd, buffer.baseAddress, buffer.count, 0, $0, &len)
                }
            }
            if n >= 0 {
                guard let from = withUnsafePointer(to: &storage, { SocketAddress(storage: $0) }) else {
                    return .failure(IOError(.errno(EAFNOSUPPORT), "receiveDatagram"))
                }
                return .success((n, from))
            }
            let e = errno
            if e == EINTR { continue }
            if DispatchLoop.isWouldBlock(e) { return nil }
            return .failure(IOError(.errno(e), "receiveDatagram"))
        }
    }

    /// The read source fired.
    func readable(_ s: DispatchSocket) {
        if s.closed { return }
        if s.role == .listener { acceptAll(s); return }
        guard let op = s.receive else {
            s.idleRead()  // lazy: nobody is waiting for data
            return
        }
        switch op {
        case .stream(let buffer, let done):
            let r = Self.recvOnce(s.fd, buffer)
            if r == -Int(EAGAIN) { return }
            s.receive = nil
            done(r >= 0 ? .success(r) : .failure(IOError(.errno(Int32(truncatingIfNeeded: -r)), "receive")))
        case .datagram(let buffer, let done):
            guard let r = Self.recvFromOnce(s.fd, buffer) else { return }
            s.receive = nil
            done(r)
        }
    }

    // MARK: Send

    public func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer,
                     _ done: @escaping (Result<Void, IOError>) -> Void) {
        enqueueSend(socket, DispatchSocket.Send(single: buffer, multi: nil, to: nil, done: done), "send")
    }

    public func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer],
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        let op = buffers.count == 1
            ? DispatchSocket.Send(single: buffers[0], multi: nil, to: nil, done: done)
            : DispatchSocket.Send(single: UnsafeRawBufferPointer(start: nil, count: 0), multi: buffers, to: nil, done: done)
        enqueueSend(socket, op, "sendv")
    }

    public func sendFile(_ socket: Socket, _ file: FileHandle, offset: Int64, count: Int,
                         _ done: @escaping (Result<Void, IOError>) -> Void) {
        enqueueSend(socket, DispatchSocket.Send(single: UnsafeRawBufferPointer(start: nil, count: 0), multi: nil, to: nil,
                                                done: done, file: file.fd, fileOffset: offset, fileRemaining: count),
                    "sendFile")
    }

    public func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer,
                             _ done: @escaping (Result<Void, IOError>) -> Void) {
        guard let s = lookup(socket.fd), s.role == .datagram else {
            complete(.unit(done, .failure(IOError(.errno(EBADF), "sendDatagram"))))
            return
        }
        enqueueSend(socket, DispatchSocket.Send(single: buffer, multi: nil, to: address, done: done), "sendDatagram")
    }

    private func enqueueSend(_ socket: Socket, _ op: DispatchSocket.Send, _ what: String) {
        guard let s = lookup(socket.fd), s.role != .listener else {
            complete(.unit(op.done, .failure(IOError(.errno(EBADF), what))))
            return
        }
        if !s.hasPendingSends && s.connectDone == nil {
            // Eager attempt: usually the whole buffer fits in the socket buffer.
            var op = op
            switch progress(s, &op) {
            case .finished(let r):
                complete(.unit(op.done, r))
                return
            case .wouldBlock:
                s.sends.append(op)
            }
        } else {
            s.sends.append(op)
        }
        if s.connectDone == nil { s.wantWrite(self) }
    }

    enum SendProgress { case finished(Result<Void, IOError>), wouldBlock }

    /// Writes as much of `op` as the socket takes.
    private func progress(_ s: DispatchSocket, _ op: inout DispatchSocket.Send) -> SendProgress {
        if let to = op.to {
            while true {
                let n = to.withSockAddr {
                    Glibc.sendto(s.fd, op.single.baseAddress, op.single.count, Int32(MSG_NOSIGNAL), $0, $1)
                }
                if n >= 0 { return .finished(.success(())) }
                let e = errno
                if e == EINTR { continue }
                if DispatchLoop.isWouldBlock(e) { return .wouldBlock }
                return .finished(.failure(IOError(.errno(e), "sendDatagram \(to)")))
            }
        }
        if op.file >= 0 {
            while op.fileRemaining > 0 {
                var offset = off_t(op.fileOffset)
                let n = Glibc.sendfile(s.fd, op.file, &offset, op.fileRemaining)
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if DispatchLoop.isWouldBlock(e) { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "sendFile")))
                }
                // 0 with bytes still owed: the file ends early (truncated under us).
                if n == 0 { return .finished(.failure(IOError(.errno(EIO), "sendFile: file shorter than the range"))) }
                op.fileRemaining -= n
                op.fileOffset += Int64(n)
            }
            return .finished(.success(()))
        }
        if let multi = op.multi {
            while op.index < multi.count {
                // Skip empty and finished buffers.
                if op.offset >= multi[op.index].count { op.index += 1; op.offset = 0; continue }
                var iovCount = 0
                var i = op.index
                while i < multi.count && iovCount < DispatchLoop.iovecCapacity {
                    let b = multi[i]
                    let skip = i == op.index ? op.offset : 0
                    if b.count > skip, let base = b.baseAddress {
                        iovecs[iovCount] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base + skip),
                                                 iov_len: b.count - skip)
                        iovCount += 1
                    }
                    i += 1
                }
                var msg = msghdr()
                msg.msg_iov = iovecs
                msg.msg_iovlen = iovCount
                let n = Glibc.sendmsg(s.fd, &msg, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if DispatchLoop.isWouldBlock(e) { return .wouldBlock }
                    return .finished(.failure(IOError(.errno(e), "sendv")))
                }
                var left = n
                while left > 0 && op.index < multi.count {
                    let avail = multi[op.index].count - op.offset
                    if left >= avail { left -= avail; op.index += 1; op.offset = 0 }
                    else { op.offset += left; left = 0 }
                }
            }
            return .finished(.success(()))
        }
        while op.offset < op.single.count {
            guard let base = op.single.baseAddress else { break }
            let n = Glibc.send(s.fd, base + op.offset, op.single.count - op.offset, Int32(MSG_NOSIGNAL))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if DispatchLoop.isWouldBlock(e) { return .wouldBlock }
                return .finished(.failure(IOError(.errno(e), "send")))
            }
            op.offset += n
        }
        return .finished(.success(()))
    }

    /// The write source fired.
    func writable(_ s: DispatchSocket) {
        if s.closed { return }
        if s.connectDone != nil { finishConnect(s); if s.closed { return } }
        while s.sendHead < s.sends.count {
            var op = s.sends[s.sendHead]
            switch progress(s, &op) {
            case .wouldBlock:
                s.sends[s.sendHead] = op
                return
            case .finished(let r):
                s.sendHead += 1
                if case .failure = r, op.to == nil {
                    // The connection is broken: every queued stream send fails alike.
                    failSends(s, r)
                    op.done(r)
                    s.idleWrite()
                    return
                }
                op.done(r)
                if s.closed { return }
            }
        }
        s.sends.removeAll(keepingCapacity: true)
        s.sendHead = 0
        s.idleWrite()
        if s.shutdownAfterSends {
            s.shutdownAfterSends = false
            _ = Glibc.shutdown(s.fd, Int32(SHUT_WR))
        }
    }

    private func failSends(_ s: DispatchSocket, _ r: Result<Void, IOError>) {
        let rest = s.sends[s.sendHead...]
        s.sends.removeAll(keepingCapacity: true)
        s.sendHead = 0
        for op in rest { complete(.unit(op.done, r)) }
    }

    // MARK: Shutdown / close

    public func shutdownWrite(_ socket: Socket) {
        guard let s = lookup(socket.fd) else { return }
        if s.hasPendingSends {
            s.shutdownAfterSends = true  // FIN after what was already handed to us
        } else {
            _ = Glibc.shutdown(s.fd, Int32(SHUT_WR))
        }
    }

    public func close(_ socket: Socket) {
        guard let s = lookup(socket.fd) else { return }
        sockets[Int(socket.fd)] = nil
        if let t = s.connectTimer { cancelTimer(t); s.connectTimer = nil }
        // Every pending operation is called back once, with .cancelled, at the end of this turn.
        if let done = s.connectDone {
            s.connectDone = nil
            complete(.socket(done, .failure(IOError(.cancelled, "connect"))))
        }
        if let op = s.receive {
            s.receive = nil
            switch op {
            case .stream(_, let done): complete(.count(done, .failure(IOError(.cancelled, "receive"))))
            case .datagram(_, let done): complete(.datagram(done, .failure(IOError(.cancelled, "receiveDatagram"))))
            }
        }
        if s.hasPendingSends { failSends(s, .failure(IOError(.cancelled, "send"))) }
        s.onAccept = nil
        s.cancelSources()
    }

    public func localAddress(of socket: Socket) -> SocketAddress? { Posix.localAddress(socket.fd) }
    public func peerAddress(of socket: Socket) -> SocketAddress? { Posix.peerAddress(socket.fd) }

    // MARK: UDP

    public func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket {
        let fd = try Posix.makeUDPSocket(boundTo: address, nonBlocking: true)
        register(DispatchSocket(fd: fd, role: .datagram))
        return Socket(fd: fd)
    }
}
