import PeregrineIO

/// One mail exchanger of a domain, with its addresses resolved.
public struct MXHost: Hashable, Sendable, CustomStringConvertible {
    /// The exchanger's host name (lowercase, no trailing dot), or the domain itself after the A fallback.
    public var name: String
    /// MX preference (lower first); 0 for the A fallback.
    public var preference: UInt16
    /// The exchanger's addresses (port 0: set the SMTP port with `withPort(_:)`).
    public var addresses: [SocketAddress]

    public init(name: String, preference: UInt16, addresses: [SocketAddress]) {
        self.name = name; self.preference = preference; self.addresses = addresses
    }

    public var description: String {
        "\(preference) \(name) [\(addresses.map(\.ip).joined(separator: ", "))]"
    }
}

/// Why a resolution failed. `isPermanent` tells a bounce (the domain cannot
/// receive mail: `bounce-upon-no-mx`, NXDOMAIN, null MX) from a deferral
/// (the DNS did not answer usefully this time: retry the queue later).
public enum DNSResolutionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The domain does not exist (RCODE 3).
    case nxdomain(domain: String)
    /// The domain exists but has no MX records, and the A fallback was not wanted (`bounce-upon-no-mx`).
    case noMXRecords(domain: String)
    /// Neither MX nor A records (or no exchanger has an address).
    case noAddressRecords(domain: String)
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    case nullMX(domain: String)
    /// The name is not a valid domain name.
    case invalidName(String)
    /// SERVFAIL, REFUSED or another error RCODE from every attempt.
    case serverFailure(domain: String, rcode: Int)
    /// No answer after `attempts` tries.
    case timedOut(domain: String, attempts: Int)
    /// The answer was truncated and held nothing usable (no TCP fallback yet).
    case truncated(domain: String)
    /// A CNAME chain longer than the resolver follows.
    case cnameLoop(domain: String)
    /// The UDP socket failed.
    case network(IOError)
    /// The resolver was closed while the query was in flight.
    case shutdown

    /// True when retrying cannot help: the message should bounce.
    public var isPermanent: Bool {
        switch self {
        case .nxdomain, .noMXRecords, .noAddressRecords, .nullMX, .invalidName, .cnameLoop: return true
        case .serverFailure, .timedOut, .truncated, .network, .shutdown: return false
        }
    }

    public var description: String {
        switch self {
        case .nxdomain(let d): return "\(d): no such domain (NXDOMAIN)"
        case .noMXRecords(let d): return "\(d): no MX records"
        case .noAddressRecords(let d): return "\(d): no MX or address records"
        case .nullMX(let d): return "\(d): null MX, the domain accepts no mail"
        case .invalidName(let d): return "'\(d)': not a valid domain name"
        case .serverFailure(let d, let rcode): return "\(d): DNS server failure (RCODE \(rcode))"
        case .timedOut(let d, let n): return "\(d): DNS query timed out after \(n) attempt\(n == 1 ? "" : "s")"
        case .truncated(let d): return "\(d): truncated DNS answer"
        case .cnameLoop(let d): return "\(d): CNAME chain too long"
        case .network(let e): return "DNS: \(e)"
        case .shutdown: return "DNS resolver shut down"
        }
    }
}

/// Where the resolver sends its queries: `dns-server` lines, else /etc/resolv.conf.
public enum DNSServers {
    /// `nameserver` lines of `resolv.conf` (port 53); 127.0.0.1:53 when there are none.
    public static func fromResolvConf(path: String = "/etc/resolv.conf") -> [SocketAddress] {
        var servers: [SocketAddress] = []
        if let text = readSmallFile(path) {
            for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard fields.count >= 2, fields[0] == "nameserver" else { continue }
                // Drop an IPv6 zone ("fe80::1%eth0"): SocketAddress takes numeric addresses only.
                let ip = fields[1].split(separator: "%").first.map(String.init) ?? String(fields[1])
                if let a = try? SocketAddress(ip: ip, port: 53) { servers.append(a) }
            }
        }
        if servers.isEmpty, let local = try? SocketAddress(ip: "127.0.0.1", port: 53) { servers.append(local) }
        return servers
    }

    static func readSmallFile(_ path: String) -> String? {
        guard let bytes = try? Posix.readFile(path, maxBytes: 1 << 20) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

#if canImport(Glibc)
import Glibc
#endif
