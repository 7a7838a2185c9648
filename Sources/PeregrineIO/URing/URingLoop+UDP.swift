#if canImport(Glibc)
import Glibc
#endif
import CURing

extension URingLoop {
    public func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket {
        let fd = try Posix.makeUDPSocket(boundTo: address, nonBlocking: false)
        registerFD(fd)
        return Socket(fd: fd)
    }

    /// sendmsg through the ring; the msghdr, iovec and destination address
    /// live in the slot until the CQE.
    public func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer,
                             _ done: @escaping (Result<Void, IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.void(done), IOError(.cancelled, "sendDatagram")); return
        }
        guard let sqe = nextSQE() else { fail(.void(done), Self.noSQE("sendDatagram")); return }
        let index = slots.allocate(.sendDatagram, fd: fd, completion: .void(done))
        let aux = slots.aux(index)
        let length = address.withSockAddr { sa, len -> socklen_t in
            UnsafeMutableRawPointer(aux.address).copyMemory(from: sa, byteCount: Int(len))
            return len
        }
        aux.iov.pointee = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
        aux.msg.pointee = msghdr()
        aux.msg.pointee.msg_name = UnsafeMutableRawPointer(aux.address)
        aux.msg.pointee.msg_namelen = length
        aux.msg.pointee.msg_iov = aux.iov
        aux.msg.pointee.msg_iovlen = 1
        io_uring_prep_sendmsg(sqe, fd, aux.msg, UInt32(MSG_NOSIGNAL))
        sqe.pointee.user_data = slots.userData(index)
        fds[Int(fd)].pending += 1
    }

    func completeSendDatagram(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        let closing = fds[Int(fd)].closing
        finishCloseIfIdle(fd)
        guard case .void(let done) = completion else { return }
        if closing {
            done(.failure(IOError(.cancelled, "sendDatagram")))
        } else if res >= 0 {
            done(.success(()))
        } else {
            done(.failure(Self.error(res, "sendDatagram")))
        }
    }

    public func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                                _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void) {
        let fd = socket.fd
        guard ensureFD(fd), !fds[Int(fd)].closing else {
            fail(.datagram(done), IOError(.cancelled, "receiveDatagram")); return
        }
        guard let sqe = nextSQE() else { fail(.datagram(done), Self.noSQE("receiveDatagram")); return }
        let index = slots.allocate(.receiveDatagram, fd: fd, completion: .datagram(done))
        let aux = slots.aux(index)
        aux.iov.pointee = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        aux.msg.pointee = msghdr()
        aux.msg.pointee.msg_name = UnsafeMutableRawPointer(aux.address)
        aux.msg.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        aux.msg.pointee.msg_iov = aux.iov
        aux.msg.pointee.msg_iovlen = 1
        io_uring_prep_recvmsg(sqe, fd, aux.msg, 0)
        sqe.pointee.user_data = slots.userData(index)
        fds[Int(fd)].pending += 1
    }

    func completeReceiveDatagram(_ index: Int32, res: Int32) {
        let fd = slots.slots[Int(index)].fd
        let sender = res >= 0 ? slots.aux(index).address : nil
        let address = sender.flatMap { SocketAddress(storage: UnsafePointer($0)) }
        let completion = slots.release(index)
        fds[Int(fd)].pending -= 1
        let closing = fds[Int(fd)].closing
        finishCloseIfIdle(fd)
        guard case .datagram(let done) = completion else { return }
        if closing {
            done(.failure(IOError(.cancelled, "receiveDatagram")))
        } else if res < 0 {
            done(.failure(Self.error(res, "receiveDatagram")))
        } else if let address {
            done(.success((Int(res), address)))
        } else {
            done(.failure(IOError(.errno(EAFNOSUPPORT), "receiveDatagram: sender address")))
        }
    }
}
