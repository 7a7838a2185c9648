/// The one interface every I/O backend implements: io_uring, epoll and Dispatch.
///
/// The interface is completion-style ("receive into this buffer, call me back
/// with n bytes"): io_uring is natively so, epoll and Dispatch emulate it.
///
/// Threading: a loop is driven by exactly one thread, the one that calls
/// `run()`. Every method except `execute(_:)` and `stop()` must be called on
/// that thread (from inside a callback, or from a task handed in with
/// `execute`), and every callback is invoked on it. Callbacks are stored, not
/// copied: callers that want no allocation per event keep their completion
/// closures as stored properties and pass the same closure each time.
///
/// Buffers: a buffer passed to `receive`, `send`, `sendv`, `write` or `read`
/// belongs to the loop until that operation's callback has run, even when the
/// socket is closed meanwhile (io_uring may still be writing into it until
/// the cancellation completes).
///
/// Cancellation: `close(_:)` cancels the socket's outstanding operations;
/// each of their callbacks is still invoked exactly once, with
/// `IOError(.cancelled, …)`, possibly in a later loop turn.
///
/// Completions are never delivered re-entrantly: a callback does not run
/// inside the call that started its operation, even when the operation could
/// complete at once (so an echo loop does not recurse on the stack).
///
/// Engines are generic over `Loop: EventLoop` and specialised at start-up,
/// so there is no existential call per event.
public protocol EventLoop: AnyObject {
    /// Which backend this is.
    static var kind: BackendKind { get }

    /// Creates a loop. Throws `.unsupported` when the kernel lacks a feature
    /// the backend needs (clear message, never a trap).
    init() throws(IOError)

    // MARK: Running

    /// Runs the loop on the calling thread until `stop()` is called.
    func run()
    /// Asks the loop to return from `run()` after the current turn. Thread-safe.
    func stop()
    /// Hands `work` to the loop from any thread; it runs on the loop's thread
    /// in a later turn, in submission order. Thread-safe.
    func execute(_ work: @escaping @Sendable () -> Void)

    /// Monotonic clock in nanoseconds, read once per loop turn.
    var now: UInt64 { get }

    // MARK: Timers

    /// One-shot timer. `fire` runs once, no earlier than `now + delay`, unless
    /// cancelled first (also by another callback of the same turn). epoll
    /// counts from `now` exactly, as libuv does; a backend may count from a
    /// fresher clock reading. Timers due in the same turn fire in deadline order
    /// (ties in scheduling order).
    @discardableResult
    func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle
    /// Cancels a pending timer; its callback will never run.
    func cancelTimer(_ timer: TimerHandle)

    // MARK: TCP

    /// Binds and listens. `onAccept` is called for every accepted connection
    /// (or with an error, after which the listener keeps going unless closed).
    func listen(on address: SocketAddress, options: ListenOptions,
                onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener
    /// Stops accepting and closes the listening socket.
    func closeListener(_ listener: Listener)

    /// Connects to `address`, optionally binding the local side to `source`
    /// first (a VMTA's IP; port 0). Fails with `.timedOut` after `timeout` ns.
    func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64,
                 _ done: @escaping (Result<Socket, IOError>) -> Void)

    /// Receives at most `buffer.count` bytes. Success(0) means the peer closed
    /// its sending side (EOF). At most one receive per socket at a time.
    func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                 _ done: @escaping (Result<Int, IOError>) -> Void)

    /// Sends all of `buffer`, handling partial writes internally; `done` runs
    /// once everything is written or the connection failed.
    func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer,
              _ done: @escaping (Result<Void, IOError>) -> Void)

    /// Gather write: sends all the buffers in order, as one logical write.
    /// The array itself is copied by the loop; the memory it points to is not.
    func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer],
               _ done: @escaping (Result<Void, IOError>) -> Void)

    /// Sends `count` bytes of `file` starting at `offset`, from the page
    /// cache to the socket without passing through user memory (sendfile on
    /// epoll and Dispatch, IORING_OP_SPLICE through a pipe on io_uring);
    /// partial sends are handled internally. A file that ends before
    /// `offset + count` fails the send (EIO): the caller's bytes are not there.
    /// Start it once the socket's previous send has completed (as
    /// SMTPClientConnection does): io_uring does not order sends in flight
    /// together. The caller keeps `file` open until `done` runs.
    func sendFile(_ socket: Socket, _ file: FileHandle, offset: Int64, count: Int,
                  _ done: @escaping (Result<Void, IOError>) -> Void)

    /// Half-close: no more sends (FIN); receiving continues.
    func shutdownWrite(_ socket: Socket)
    /// Closes the socket and cancels its outstanding operations.
    func close(_ socket: Socket)

    /// The local and remote address of a connected socket.
    func localAddress(of socket: Socket) -> SocketAddress?
    func peerAddress(of socket: Socket) -> SocketAddress?

    // MARK: UDP

    /// Opens a UDP socket bound to `address` (port 0 for an ephemeral port).
    func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket
    /// Sends one datagram.
    func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer,
                      _ done: @escaping (Result<Void, IOError>) -> Void)
    /// Receives one datagram: its length and sender.
    func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void)

    // MARK: Files (the spool)

    /// Opens (creating if needed, mode 0644) a file for positional I/O.
    func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle
    /// Writes all of `buffer` at `offset`.
    func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
               _ done: @escaping (Result<Void, IOError>) -> Void)
    /// Reads up to `buffer.count` bytes at `offset` (fewer only at end of file).
    func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
              _ done: @escaping (Result<Int, IOError>) -> Void)
    /// fdatasync. Covers every write to `file` whose `write` call was made
    /// before this call (even if that write has not completed yet): the
    /// backend orders it after them. `done` runs when the data is durable.
    func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void)
    /// Closes the file (after its outstanding operations have completed).
    func closeFile(_ file: FileHandle)
}

extension EventLoop {
    public func listen(on address: SocketAddress,
                       onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener {
        try listen(on: address, options: ListenOptions(), onAccept: onAccept)
    }
}
