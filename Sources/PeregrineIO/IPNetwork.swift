#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 network in CIDR form: `0/0`, `127.0.0.0/8`, `10/8`,
/// `192.0.2.7` (a host), `::1/128`, `2001:db8::/32`. Host bits are cleared.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, network byte order, host bits zero.
    public let address: [UInt8]
    public let prefixLength: Int

    public var isIPv4: Bool { address.count == 4 }

    public init(address: [UInt8], prefixLength: Int) {
        let bits = address.count * 8
        let prefix = max(0, min(prefixLength, bits))
        var masked = address
        for i in 0..<masked.count {
            let keep = max(0, min(8, prefix - i * 8))
            masked[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        self.address = masked
        self.prefixLength = prefix
    }

    /// True when `bytes` (4 or 16) lies in the network. IPv4-mapped IPv6
    /// addresses (`::ffff:a.b.c.d`) match IPv4 networks.
    public func contains(_ bytes: [UInt8]) -> Bool {
        var candidate = bytes
        if address.count == 4, candidate.count == 16,
           candidate[0..<10].allSatisfy({ $0 == 0 }), candidate[10] == 0xFF, candidate[11] == 0xFF {
            candidate = Array(candidate[12..<16])
        }
        guard candidate.count == address.count else { return false }
        return IPNetwork(address: candidate, prefixLength: prefixLength).address == address
    }

    /// True when the numeric address `ip` lies in the network; false for non-numeric text.
    public func contains(ip: String) -> Bool {
        guard let bytes = IPNetwork.numericAddress(ip) else { return false }
        return contains(bytes)
    }

    /// True when the socket address's IP lies in the network (the port is ignored).
    public func contains(_ socketAddress: SocketAddress) -> Bool {
        contains(ip: socketAddress.ip)
    }

    /// Parses a numeric IPv4 or IPv6 address into 4 or 16 bytes.
    public static func numericAddress(_ text: String) -> [UInt8]? {
        var a4 = in_addr()
        if inet_pton(AF_INET, text, &a4) == 1 {
            return withUnsafeBytes(of: &a4) { Array($0) }
        }
        var a6 = in6_addr()
        if inet_pton(AF_INET6, text, &a6) == 1 {
            return withUnsafeBytes(of: &a6) { Array($0) }
        }
        return nil
    }

    public var description: String {
        if isIPv4 { return address.map(String.init).joined(separator: ".") + "/\(prefixLength)" }
        var a6 = in6_addr()
        withUnsafeMutableBytes(of: &a6) { raw in
            for (i, b) in address.enumerated() { raw[i] = b }
        }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        _ = inet_ntop(AF_INET6, &a6, &buf, socklen_t(buf.count))
        return String(cString: buf) + "/\(prefixLength)"
    }
}
