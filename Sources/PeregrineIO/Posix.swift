#if canImport(Glibc)
import Glibc
#endif

/// Thin typed wrappers over the socket syscalls the readiness and completion
/// backends share (swift-system style: errors as values, no hidden state).
public enum Posix {
    /// A non-blocking, close-on-exec TCP or UDP socket for `family`.
    public static func socket(family: Int32, type: Int32, nonBlocking: Bool) throws(IOError) -> Int32 {
        var flags = Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { flags |= Int32(SOCK_NONBLOCK.rawValue) }
        let fd = Glibc.socket(family, type | flags, 0)
        if fd < 0 { throw IOError.lastErrno("socket") }
        return fd
    }

    public static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(IOError) {
        var v = value
        if setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw IOError.lastErrno("setsockopt")
        }
    }

    public static func bind(_ fd: Int32, to address: SocketAddress) throws(IOError) {
        let rc = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            throw IOError(.errno(e), "bind \(address)")
        }
    }

    /// A bound, listening TCP socket (SO_REUSEADDR always; SO_REUSEPORT on request).
    public static func makeListener(_ address: SocketAddress, options: ListenOptions,
                                    nonBlocking: Bool) throws(IOError) -> Listener {
        let fd = try socket(family: address.family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: nonBlocking)
        do throws(IOError) {
            try setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            if options.reusePort { try setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) }
            try bind(fd, to: address)
            if Glibc.listen(fd, options.backlog) != 0 { throw IOError.lastErrno("listen \(address)") }
            let bound = localAddress(fd) ?? address
            return Listener(fd: fd, address: bound)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// A TCP socket ready for connect: optionally bound to `source` (port 0)
    /// and with TCP_NODELAY, since SMTP is request/response.
    public static func makeConnectingSocket(to address: SocketAddress, from source: SocketAddress?,
                                            nonBlocking: Bool) throws(IOError) -> Int32 {
        let fd = try socket(family: address.family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: nonBlocking)
        do throws(IOError) {
            try setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
            if let source {
                // Lets many VMTA connections share source IPs without exhausting ports early.
                try setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
                try bind(fd, to: source.withPort(0))
            }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Sets TCP_NODELAY on an accepted socket (best effort).
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    public static func setNonBlocking(_ fd: Int32) throws(IOError) {
        let flags = fcntl(fd, F_GETFL)
        if flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 { throw IOError.lastErrno("fcntl") }
    }

    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        if rc != 0 { return nil }
        return withUnsafePointer(to: &storage) { SocketAddress(storage: $0) }
    }

    public static func peerAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        if rc != 0 { return nil }
        return withUnsafePointer(to: &storage) { SocketAddress(storage: $0) }
    }

    /// The pending error of a socket (SO_ERROR), used after a non-blocking connect.
    public static func socketError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return errno }
        return err
    }

    /// A UDP socket bound to `address`.
    public static func makeUDPSocket(boundTo address: SocketAddress, nonBlocking: Bool) throws(IOError) -> Int32 {
        let fd = try socket(family: address.family, type: Int32(SOCK_DGRAM.rawValue), nonBlocking: nonBlocking)
        do throws(IOError) {
            try bind(fd, to: address)
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Opens a file for positional I/O (O_CLOEXEC; O_CREAT/O_TRUNC on request; mode 0644).
    public static func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> Int32 {
        var flags = O_RDWR | O_CLOEXEC
        if create { flags |= O_CREAT }
        if truncate { flags |= O_TRUNC }
        let fd = Glibc.open(path, flags, 0o644)
        if fd < 0 {
            let e = errno
            throw IOError(.errno(e), "open \(path)")
        }
        return fd
    }

    /// Ignores SIGPIPE process-wide: a peer closing mid-send must be an EPIPE
    /// error value, never a signal that kills the MTA. Idempotent.
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }
}
