import PeregrineIO

/// A host with an optional port: `mx.example.com`, `mx.example.com:2525`,
/// `[127.0.1.1]:2525`, `[::1]:25`, `0/0:25`.
///
/// For `route`, brackets keep PowerMTA's meaning: `[host]` is connected to
/// directly (address records only), a bare `host` is looked up by MX.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16?
    /// Written in brackets: connect to this host itself, no MX lookup.
    public var isLiteral: Bool

    public init(host: String, port: UInt16? = nil, isLiteral: Bool = false) {
        self.host = host
        self.port = port
        self.isLiteral = isLiteral
    }

    /// True when `host` is a numeric IPv4/IPv6 address.
    public var isNumeric: Bool { IPNetwork.numericAddress(host) != nil }

    /// The numeric socket address; `0/0` and `*` mean every IPv4 address.
    public func socketAddress(defaultPort: UInt16) throws(ConfigValueError) -> SocketAddress {
        let ip = (host == "0/0" || host == "*") ? "0.0.0.0" : host
        do {
            return try SocketAddress(ip: ip, port: port ?? defaultPort)
        } catch {
            throw ConfigValueError("'\(host)' is not a numeric IPv4 or IPv6 address")
        }
    }

    public var description: String {
        let h = isLiteral || host.contains(":") ? "[\(host)]" : host
        if let port { return "\(h):\(port)" }
        return h
    }
}

extension ConfigValue {
    /// `host`, `host:port`, `[host]`, `[host]:port`; unbracketed IPv6 is taken as a bare host.
    public static func hostPort(_ text: String) throws(ConfigValueError) -> HostPort {
        var host = Substring(text)
        var portText: Substring?
        var literal = false
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw ConfigValueError("'\(text)': missing ']'")
            }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            literal = true
            if rest.hasPrefix(":") { portText = rest.dropFirst() }
            else if !rest.isEmpty { throw ConfigValueError("'\(text)': unexpected '\(rest)' after ']'") }
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw ConfigValueError("'\(text)': missing host") }
        let hostText = String(host)
        let isAddress = IPNetwork.numericAddress(hostText) != nil || hostText == "0/0" || hostText == "*"
        if !isAddress {
            let valid = hostText.unicodeScalars.allSatisfy { s in
                s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "-" || s == "." || s == "_")
            }
            guard valid, !hostText.hasPrefix("."), !hostText.contains("..") else {
                throw ConfigValueError("'\(text)': '\(hostText)' is not a host name or IP address")
            }
        }
        var port: UInt16?
        if let portText {
            port = try ConfigValue.port(String(portText))
        }
        return HostPort(host: hostText, port: port, isLiteral: literal)
    }
}
