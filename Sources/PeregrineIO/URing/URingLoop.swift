/// Placeholder until the ioUring backend lands: creating it fails with a clear error.
public final class URingLoop: EventLoop {
    public static let kind: BackendKind = .ioUring
    public init() throws(IOError) { throw IOError(.unsupported("the ioUring backend is not built yet"), "URingLoop") }
    public func run() {}
    public func stop() {}
    public func execute(_ work: @escaping @Sendable () -> Void) {}
    public var now: UInt64 { 0 }
    public func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle { TimerHandle(id: 0) }
    public func cancelTimer(_ timer: TimerHandle) {}
    public func listen(on address: SocketAddress, options: ListenOptions, onAccept: @escaping (Result<AcceptedConnection, IOError>) -> Void) throws(IOError) -> Listener { throw IOError(.unsupported("stub"), "listen") }
    public func closeListener(_ listener: Listener) {}
    public func connect(to address: SocketAddress, from source: SocketAddress?, timeout: UInt64, _ done: @escaping (Result<Socket, IOError>) -> Void) {}
    public func receive(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer, _ done: @escaping (Result<Int, IOError>) -> Void) {}
    public func send(_ socket: Socket, _ buffer: UnsafeRawBufferPointer, _ done: @escaping (Result<Void, IOError>) -> Void) {}
    public func sendv(_ socket: Socket, _ buffers: [UnsafeRawBufferPointer], _ done: @escaping (Result<Void, IOError>) -> Void) {}
    public func shutdownWrite(_ socket: Socket) {}
    public func close(_ socket: Socket) {}
    public func localAddress(of socket: Socket) -> SocketAddress? { nil }
    public func peerAddress(of socket: Socket) -> SocketAddress? { nil }
    public func openUDP(boundTo address: SocketAddress) throws(IOError) -> Socket { throw IOError(.unsupported("stub"), "udp") }
    public func sendDatagram(_ socket: Socket, to address: SocketAddress, _ buffer: UnsafeRawBufferPointer, _ done: @escaping (Result<Void, IOError>) -> Void) {}
    public func receiveDatagram(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer, _ done: @escaping (Result<(Int, SocketAddress), IOError>) -> Void) {}
    public func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle { throw IOError(.unsupported("stub"), "open") }
    public func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64, _ done: @escaping (Result<Void, IOError>) -> Void) {}
    public func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, _ done: @escaping (Result<Int, IOError>) -> Void) {}
    public func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {}
    public func closeFile(_ file: FileHandle) {}
}
