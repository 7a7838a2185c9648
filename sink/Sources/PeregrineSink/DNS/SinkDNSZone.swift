/// The names the sink's DNS responder knows: every profile domain has MX
/// records `mx1.<isp>.sink`, `mx2.<isp>.sink`, … whose A records are the
/// profile's MX addresses. A profile with domain `*` (accept-all) catches
/// every other domain. Anything else is NXDOMAIN. `--dns-fault` names
/// answer SERVFAIL, NXDOMAIN or nothing instead, whatever they would have had.
public struct SinkDNSZone: Sendable {
    public struct Host: Sendable, Hashable {
        public var name: String
        /// Four bytes (IPv4) or sixteen (IPv6).
        public var address: [UInt8]
    }

    /// Lower-cased domain → MX hosts in preference order.
    public private(set) var mx: [String: [Host]] = [:]
    public private(set) var wildcard: [Host]?
    /// Lower-cased host name → its address.
    public private(set) var hosts: [String: [UInt8]] = [:]
    /// `--dns-fault`: lower-cased name (no trailing dot) → the failure it answers with.
    public var faults: [String: SinkDNSFault] = [:]

    public init(profiles: [SinkISPProfile]) {
        for p in profiles {
            var list: [Host] = []
            for (i, ip) in p.mx.enumerated() {
                guard let bytes = SinkDNSZone.addressBytes(ip) else { continue }
                let name = "mx\(i + 1).\(p.name.lowercased()).sink"
                list.append(Host(name: name, address: bytes))
                hosts[name] = bytes
            }
            for d in p.domains {
                if d == "*" { if wildcard == nil { wildcard = list } } else { mx[d.lowercased()] = list }
            }
        }
    }

    public enum Answer: Equatable, Sendable {
        case mx([Host])
        case a([UInt8])
        /// The name exists but has no record of that type.
        case noData
        case nxDomain
        /// SERVFAIL (`--dns-fault NAME=servfail`).
        case serverFailure
        /// No reply at all (`--dns-fault NAME=timeout`): the resolver times out.
        case noReply
    }

    /// qtype 15 (MX), 1 (A), 28 (AAAA); others get noData for known names.
    public func answer(name raw: String, type: UInt16) -> Answer {
        var name = raw.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        switch faults[name] {
        case .servfail?: return .serverFailure
        case .nxdomain?: return .nxDomain
        case .timeout?: return .noReply
        case nil: break
        }
        if let addr = hosts[name] {
            if type == 1 && addr.count == 4 { return .a(addr) }
            if type == 28 && addr.count == 16 { return .a(addr) }
            return .noData
        }
        if let list = mx[name] ?? (name.hasSuffix(".sink") ? nil : wildcard) {
            return type == 15 ? .mx(list) : .noData
        }
        return .nxDomain
    }

    static func addressBytes(_ ip: String) -> [UInt8]? {
        let parts = ip.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 4 {
            var out: [UInt8] = []
            for p in parts { guard let v = UInt8(p) else { return nil }; out.append(v) }
            return out
        }
        return SinkDNSZone.ipv6Bytes(ip)
    }

    static func ipv6Bytes(_ ip: String) -> [UInt8]? {
        let halves = ip.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for g in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard let v = UInt16(g, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }
}

/// `--dns-fault NAME=…`: how the sink's DNS fails for one name, so a run can
/// check what an MTA does with a temporary (SERVFAIL, timeout) and a
/// permanent (NXDOMAIN) resolution failure of a provider's domain or MX host.
public enum SinkDNSFault: String, Sendable, Equatable {
    case servfail, nxdomain, timeout
}
