import PeregrineIO

extension ConfigValue {
    /// A CIDR network; see `IPNetwork`.
    public static func network(_ text: String) throws(ConfigValueError) -> IPNetwork {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let hostPart = parts.first, !hostPart.isEmpty else {
            throw ConfigValueError("'\(text)' is not a network (expected CIDR such as 127.0.0.0/8, 0/0, ::1/128)")
        }
        var bytes = IPNetwork.numericAddress(String(hostPart))
        if bytes == nil, parts.count == 2 {
            // Abbreviated IPv4 as PowerMTA writes it: `0/0`, `10/8`, `192.168/16`.
            let octets = hostPart.split(separator: ".", omittingEmptySubsequences: false)
            if octets.count < 4, octets.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) }) {
                let values = octets.compactMap { UInt8($0) }
                if values.count == octets.count { bytes = values + Array(repeating: 0, count: 4 - values.count) }
            }
        }
        guard let address = bytes else {
            throw ConfigValueError("'\(text)' is not a network: '\(hostPart)' is not an IPv4 or IPv6 address")
        }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bits).contains(p), parts[1].allSatisfy(\.isNumber) else {
                throw ConfigValueError("'\(text)' is not a network: prefix length '\(parts[1])' must be 0...\(bits)")
            }
            prefix = p
        }
        return IPNetwork(address: address, prefixLength: prefix)
    }
}
