#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// A real event loop whose clock is virtual: sockets, files and `execute` go
/// to the backend underneath, but `now` and every timer belong to the test.
/// Time moves only in `advance(upTo:)`, straight to the next timer's deadline,
/// and only when nothing is in flight, so a test of throttles and schedules
/// (max-msg-rate, retry-after, suspend=, disable-source-ip) asserts exact
/// virtual times and counts over real SMTP on loopback, and never measures
/// wall time: a slow machine only makes it take longer.
final class VirtualTimeLoop<Inner: EventLoop>: EventLoop {
    static var kind: BackendKind { Inner.kind }

    let inner: Inner
    /// Virtual monotonic nanoseconds; starts well above 0 so that "not yet" and 0 differ.
    private(set) var now: UInt64 = 1_000_000_000_000

    private var timers: [UInt64: (at: UInt64, fire: () -> Void)] = [:]
    private var nextTimerID: UInt64 = 0
    /// Operations whose callback has not run yet, receives excepted (a
    /// connection always has one posted): connects, sends, file and datagram I/O.
    private(set) var inFlight = 0
    private let executeLock = NSLockLike()
    private var executesQueued = 0
    /// The engine's side of each connection it made, by descriptor.
    struct Connection { var localPort: UInt16 = 0, sent = 0, received = 0, receivesPending = 0, closed = false }
    private(set) var connections: [Int32: Connection] = [:]
    /// The virtual time of every connect the engine started.
    private(set) var connectTimes: [UInt64] = []

    init() throws(IOError) { inner = try Inner() }

    func run() { inner.run() }
    func stop() { inner.stop() }

    func execute(_ work: @escaping @Sendable () -> Void) {
        executeLock.locked { executesQueued += 1 }
        inner.execute { [self] in
            executeLock.locked { executesQueued -= 1 }
            work()
        }
    }

    var queuedExecutes: Int { executeLock.locked { executesQueued } }

    // MARK: Virtual timers

    @discardableResult
    func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        nextTimerID += 1
        timers[nextTimerID] = (now &+ delay, fire)
        return TimerHandle(id: nextTimerID)
    }

    func cancelTimer(_ timer: TimerHandle) { timers[timer.id] = nil }

    /// The earliest pending virtual deadline.
    var nextDeadline: UInt64? { timers.values.map(\.at).min() }

    /// Moves the clock to the earliest timer deadline (if it is at most
    /// `limit`) and fires that one timer (ties: the one scheduled first).
    /// Returns false when no timer is due by `limit`.
    func advance(upTo limit: UInt64) -> Bool {
        guard let (id, timer) = timers.min(by: { ($0.value.at, $0.key) < ($1.value.at, $1.key) }),
              timer.at <= limit else { return false }
        timers[id] = nil
        now = max(now, timer.at)
        timer.fire()
        return true
    }

    // MARK: Real I/O, counted

    private func counted<T>(_ done: @escaping (Result<T, IOError>) -> Void) -> (Result<T, IOError>) -> Void {
        inFlight += 1
        return { [self] result in
            inFlight -= 1
            done(result)
        }
    }

    func listen(on address: SocketAddress, options: ListenOptions,
                onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener {
        try inner.listen(on: address, options: options, onAccept: onAccept)
    }
    func closeListener(_ listener: Listener) { inner.closeListener(listener) }

    func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64,
                 _ done: @escaping (Result<Socket, IOError>) -> Void) {
        connectTimes.append(now)
        let finish = counted(done)
        inner.connect(to: address, from: source, timeout: timeout) { [self] result in
            if case .success(let socket) = result {
                connections[socket.fd] = Connection(localPort: inner.localAddress(of: socket)?.port ?? 0)
            }
            finish(result)
        }
    }

    func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                 _ done: @escaping (Result<Int, IOError>) -> Void) {
        connections[socket.fd]?.receivesPending += 1
        inner.receive(socket, into: buffer) { [self] result in
            connections[socket.fd]?.receivesPending -= 1
            if case .success(let n) = result { connections[socket.fd]?.received += n }
            done(result)
            forgetIfSettled(socket.fd)
        }
    }

    func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer, _ done: @escaping (Result<Void, IOError>) -> Void) {
        let finish = counted(done), n = buffer.count
        inner.send(socket, buffer) { [self] result in
            if case .success = result { connections[socket.fd]?.sent += n }
            finish(result)
        }
    }

    func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer], _ done: @escaping (Result<Void, IOError>) -> Void) {
        let finish = counted(done), n = buffers.reduce(0) { $0 + $1.count }
        inner.sendv(socket, buffers) { [self] result in
            if case .success = result { connections[socket.fd]?.sent += n }
            finish(result)
        }
    }

    func sendFile(_ socket: Socket, _ file: FileHandle, offset: Int64, count: Int,
                  _ done: @escaping (Result<Void, IOError>) -> Void) {
        let finish = counted(done)
        inner.sendFile(socket, file, offset: offset, count: count) { [self] result in
            if case .success = result { connections[socket.fd]?.sent += count }
            finish(result)
        }
    }

    func shutdownWrite(_ socket: Socket) { inner.shutdownWrite(socket) }
    func close(_ socket: Socket) {
        connections[socket.fd]?.closed = true
        inner.close(socket)
        forgetIfSettled(socket.fd)
    }

    /// A closed connection is forgotten once its last receive has called
    /// back (its descriptor number may then be reused).
    private func forgetIfSettled(_ fd: Int32) {
        if let c = connections[fd], c.closed, c.receivesPending == 0 { connections[fd] = nil }
    }

    /// Whether nothing can happen until a timer fires: no operation or
    /// `execute` pending, and on every open connection the peer has read
    /// and answered everything sent (`peer(localPort)`: its read and written
    /// byte counts, published only once it has answered), and the engine has
    /// received every byte of those answers.
    func isQuiescent(peer: (UInt16) -> (read: Int, written: Int)?) -> Bool {
        guard inFlight == 0, queuedExecutes == 0 else { return false }
        for c in connections.values {
            if c.closed { if c.receivesPending > 0 { return false } else { continue } }
            guard let p = peer(c.localPort), p.read == c.sent, p.written == c.received else { return false }
        }
        return true
    }
    func localAddress(of socket: Socket) -> SocketAddress? { inner.localAddress(of: socket) }
    func peerAddress(of socket: Socket) -> SocketAddress? { inner.peerAddress(of: socket) }

    func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket { try inner.openUDP(boundTo: address) }
    func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer,
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        inner.sendDatagram(socket, to: address, buffer, counted(done))
    }
    func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void) {
        inner.receiveDatagram(socket, into: buffer, done)
    }

    func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> PeregrineIO.FileHandle {
        try inner.openFile(path, create: create, truncate: truncate)
    }
    func write(_ file: PeregrineIO.FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
               _ done: @escaping (Result<Void, IOError>) -> Void) {
        inner.write(file, buffer, at: offset, counted(done))
    }
    func read(_ file: PeregrineIO.FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
              _ done: @escaping (Result<Int, IOError>) -> Void) {
        inner.read(file, into: buffer, at: offset, counted(done))
    }
    func fdatasync(_ file: PeregrineIO.FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        inner.fdatasync(file, counted(done))
    }
    func closeFile(_ file: PeregrineIO.FileHandle) { inner.closeFile(file) }
}

/// A pthread mutex (this file does not import Foundation: its FileHandle
/// would shadow PeregrineIO's).
final class NSLockLike: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
