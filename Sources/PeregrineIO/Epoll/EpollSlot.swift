/// The registration state of one fd number. Created the first time the loop
/// sees that number and reused after every close, so parking an operation
/// stores a callback and a pointer in place and allocates nothing.
final class EpollSlot {
    enum Kind { case closed, listener, connecting, stream, datagram }

    let fd: Int32
    var kind: Kind = .closed
    /// Bumped at every open, so that an event or timer for an earlier socket
    /// that had the same fd number is recognised as stale.
    var generation: UInt32 = 0
    var token: UInt64 { UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd)) }

    // Receive side: at most one parked receive (stream or datagram).
    var receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    var receiveDone: ((Result<Int, IOError>) -> Void)?
    var receiveFromDone: ((Result<(Int, SocketAddress), IOError>) -> Void)?
    var hasReceive: Bool { receiveDone != nil || receiveFromDone != nil }
    /// False from an EAGAIN until the next edge: an operation parks without
    /// a syscall that would fail anyway (the edge will retry it).
    var readable = true
    var writable = true

    // Send side: a FIFO of writes, `writeHead` is the one in progress.
    var writes: [EpollWrite] = []
    var writeHead = 0
    /// `shutdownWrite` was asked while writes were queued: FIN after the last one.
    var shutdownAfterWrites = false

    // Listener.
    var onAccept: ((Result<AcceptedConnection, IOError>) -> Void)?
    var acceptRetry: TimerHandle?

    // Connecting socket.
    var connectDone: ((Result<Socket, IOError>) -> Void)?
    var connectTimer: TimerHandle?

    init(fd: Int32) { self.fd = fd }

    func open(kind: Kind) {
        self.kind = kind
        generation &+= 1
        readable = true
        writable = true
    }

    /// Forgets everything (the callbacks must have been taken out first).
    func reset() {
        kind = .closed
        generation &+= 1
        receiveBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        receiveDone = nil
        receiveFromDone = nil
        writes.removeAll(keepingCapacity: true)
        writeHead = 0
        shutdownAfterWrites = false
        onAccept = nil
        acceptRetry = nil
        connectDone = nil
        connectTimer = nil
    }
}

/// One queued write: plain bytes, a gather list, a datagram, or a file range (sendfile).
struct EpollWrite {
    enum Kind { case bytes, vector, datagram, file }
    var kind: Kind
    var base: UnsafeRawPointer?
    var remaining: Int
    var vector: [UnsafeRawBufferPointer]
    var vectorIndex: Int
    var vectorOffset: Int
    var target: SocketAddress?
    var done: (Result<Void, IOError>) -> Void
    /// `.file`: the file and where its next byte is (`remaining` bytes to go).
    var file: Int32 = -1
    var fileOffset: Int64 = 0
}

/// A callback with its result, queued to run later in the turn.
enum EpollCompletion {
    case count((Result<Int, IOError>) -> Void, Result<Int, IOError>)
    case void((Result<Void, IOError>) -> Void, Result<Void, IOError>)
    case datagram((Result<(Int, SocketAddress), IOError>) -> Void, Result<(Int, SocketAddress), IOError>)
    case connected((Result<Socket, IOError>) -> Void, Result<Socket, IOError>)
    case accepted((Result<AcceptedConnection, IOError>) -> Void, Result<AcceptedConnection, IOError>)

    @inline(__always)
    func run() {
        switch self {
        case .count(let f, let r): f(r)
        case .void(let f, let r): f(r)
        case .datagram(let f, let r): f(r)
        case .connected(let f, let r): f(r)
        case .accepted(let f, let r): f(r)
        }
    }
}
