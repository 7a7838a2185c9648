import PeregrineIO

/// Answers MX and A queries for the profile domains over UDP, on a loop.
final class SinkDNSResponder<Loop: EventLoop> {
    let loop: Loop
    let zone: SinkDNSZone
    private var socket: Socket?
    private let receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    private let sendBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    private var receiving = false
    private var sending = false
    private var stopped = false
    private(set) var answered: UInt64 = 0

    init(loop: Loop, zone: SinkDNSZone) {
        self.loop = loop
        self.zone = zone
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
    }

    func start(on address: SocketAddress) throws(IOError) -> SocketAddress {
        let s = try loop.openUDP(boundTo: address)
        socket = s
        receiveNext()
        return loop.localAddress(of: s) ?? address
    }

    private func receiveNext() {
        guard let s = socket, !stopped, !receiving, !sending else { return }
        receiving = true
        loop.receiveDatagram(s, into: receiveBuffer) { [self] r in
            receiving = false
            guard !stopped else { return }
            if case .success(let (n, from)) = r { handle(n, from: from) }
            if case .failure(let e) = r, e.isCancelled { return }
            receiveNext()
        }
    }

    private func handle(_ n: Int, from: SocketAddress) {
        guard let s = socket else { return }
        guard let reply = zone.reply(to: Array(receiveBuffer[0..<n])) else { return }
        let count = min(reply.count, sendBuffer.count)
        UnsafeMutableRawBufferPointer(rebasing: sendBuffer[0..<count]).copyBytes(from: reply[0..<count])
        sending = true
        answered &+= 1
        loop.sendDatagram(s, to: from, UnsafeRawBufferPointer(rebasing: sendBuffer[0..<count])) { [self] _ in
            sending = false
            receiveNext()
        }
    }

    func shutdown() {
        stopped = true
        if let s = socket { loop.close(s) }
    }
}
