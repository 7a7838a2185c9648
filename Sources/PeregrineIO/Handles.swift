/// A connected TCP socket or a UDP socket owned by one event loop.
/// A thin typed wrapper over the descriptor, in the spirit of swift-system.
public struct Socket: Hashable, Sendable, CustomStringConvertible {
    public let fd: Int32
    @inlinable public init(fd: Int32) { self.fd = fd }
    public var description: String { "socket(\(fd))" }
}

/// A listening TCP socket registered with a loop.
public struct Listener: Hashable, Sendable {
    public let fd: Int32
    /// The address actually bound (the kernel's choice when port 0 was asked).
    public let address: SocketAddress
    @inlinable public init(fd: Int32, address: SocketAddress) { self.fd = fd; self.address = address }

    /// How long (ns) every backend pauses accepting after accept failed for
    /// lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM),
    /// instead of retrying at once on the same error.
    public static let acceptRetryDelay: UInt64 = 50_000_000
}

/// A file opened through a loop for positional writes, reads and fdatasync (the spool).
public struct FileHandle: Hashable, Sendable {
    public let fd: Int32
    @inlinable public init(fd: Int32) { self.fd = fd }
}

/// Identifies a scheduled timer; cancelling a fired or cancelled timer is a no-op.
public struct TimerHandle: Hashable, Sendable {
    public let id: UInt64
    @inlinable public init(id: UInt64) { self.id = id }
}

/// A freshly accepted connection.
public struct AcceptedConnection: Sendable {
    public let socket: Socket
    public let peer: SocketAddress
    /// The local address the peer connected to (which MX / VMTA IP it reached).
    public let local: SocketAddress
    public init(socket: Socket, peer: SocketAddress, local: SocketAddress) {
        self.socket = socket; self.peer = peer; self.local = local
    }
}

/// Options for a listening socket.
public struct ListenOptions: Sendable {
    public var backlog: Int32 = 1024
    /// SO_REUSEPORT so that every loop thread can own a listener on the same
    /// address and the kernel spreads connections between them.
    public var reusePort: Bool = false
    public init(backlog: Int32 = 1024, reusePort: Bool = false) {
        self.backlog = backlog; self.reusePort = reusePort
    }
}
