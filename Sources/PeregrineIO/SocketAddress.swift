#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address (numeric only: name resolution is the
/// engine's job, through its own DNS client).
public enum SocketAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(sockaddr_in)
    case v6(sockaddr_in6)

    /// `ip` is numeric: "127.0.0.2", "::1".
    public init(ip: String, port: UInt16) throws(IOError) {
        var a4 = in_addr()
        if inet_pton(AF_INET, ip, &a4) == 1 {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            sa.sin_addr = a4
            self = .v4(sa)
            return
        }
        var a6 = in6_addr()
        if inet_pton(AF_INET6, ip, &a6) == 1 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            sa.sin6_addr = a6
            self = .v6(sa)
            return
        }
        throw IOError(.invalidArgument("'\(ip)' is not a numeric IPv4 or IPv6 address"), "address")
    }

    /// Parses "127.0.0.1:25", "[::1]:25", or (with `defaultPort`) a bare "127.0.0.1".
    /// `0/0:25` and `*:25` mean every IPv4 address.
    public init(parsing text: String, defaultPort: UInt16? = nil) throws(IOError) {
        var host = Substring(text)
        var portText: Substring? = nil
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw IOError(.invalidArgument("'\(text)': missing ']'"), "address")
            }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if rest.hasPrefix(":") { portText = rest.dropFirst() }
            else if !rest.isEmpty { throw IOError(.invalidArgument("'\(text)': junk after ']'"), "address") }
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        let port: UInt16
        if let p = portText {
            guard let v = UInt16(p) else {
                throw IOError(.invalidArgument("'\(text)': port '\(p)' is not a number in 0...65535"), "address")
            }
            port = v
        } else if let d = defaultPort {
            port = d
        } else {
            throw IOError(.invalidArgument("'\(text)': expected ADDRESS:PORT"), "address")
        }
        if host == "0/0" || host == "*" || host.isEmpty { host = "0.0.0.0" }
        try self.init(ip: String(host), port: port)
    }

    public var family: Int32 {
        switch self {
        case .v4: return AF_INET
        case .v6: return AF_INET6
        }
    }

    public var port: UInt16 {
        switch self {
        case .v4(let sa): return UInt16(bigEndian: sa.sin_port)
        case .v6(let sa): return UInt16(bigEndian: sa.sin6_port)
        }
    }

    public func withPort(_ port: UInt16) -> SocketAddress {
        switch self {
        case .v4(var sa): sa.sin_port = port.bigEndian; return .v4(sa)
        case .v6(var sa): sa.sin6_port = port.bigEndian; return .v6(sa)
        }
    }

    /// The numeric address without the port.
    public var ip: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch self {
        case .v4(var sa):
            _ = inet_ntop(AF_INET, &sa.sin_addr, &buf, socklen_t(buf.count))
        case .v6(var sa):
            _ = inet_ntop(AF_INET6, &sa.sin6_addr, &buf, socklen_t(buf.count))
        }
        return String(cString: buf)
    }

    public var description: String {
        switch self {
        case .v4: return "\(ip):\(port)"
        case .v6: return "[\(ip)]:\(port)"
        }
    }

    /// Calls `body` with a pointer to the sockaddr and its length.
    @inlinable
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        switch self {
        case .v4(var sa):
            return try withUnsafePointer(to: &sa) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6(var sa):
            return try withUnsafePointer(to: &sa) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    /// Builds an address from a kernel-filled `sockaddr_storage`.
    public init?(storage: UnsafePointer<sockaddr_storage>) {
        switch Int32(storage.pointee.ss_family) {
        case AF_INET:
            self = storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { .v4($0.pointee) }
        case AF_INET6:
            self = storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { .v6($0.pointee) }
        default:
            return nil
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.description == b.description
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(description)
    }
}
