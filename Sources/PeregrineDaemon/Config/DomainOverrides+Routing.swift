import PeregrineConfig

/// The PowerMTA `<domain>` directives that route (`smtp-hosts`, `queue-to`)
/// or hold (`max-msg-rate 0`) a queue's mail.
extension DomainOverrides {
    /// At most this many `smtp-hosts` entries (each is looked up per connection attempt).
    static let maxSMTPHosts = 32

    /// `smtp-hosts HOST[:PORT][, HOST[:PORT]…]`, separated by commas or spaces:
    /// `[host]` (or `[ip]`) is connected to itself, a bare `host` is looked up
    /// by MX as a domain is, and the hosts are tried in the order given.
    /// `smtp:` is accepted; `lmtp:` is refused (Peregrine delivers by SMTP only).
    static func smtpHosts(_ node: ConfigNode) throws(ConfigError) -> [HostPort] {
        let entries = node.arguments.joined(separator: ",").split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" })
        guard !entries.isEmpty else { throw node.error("smtp-hosts needs at least one host") }
        guard entries.count <= maxSMTPHosts else {
            throw node.error("smtp-hosts: \(entries.count) hosts; at most \(maxSMTPHosts)")
        }
        var hosts: [HostPort] = []
        for entry in entries {
            var text = String(entry)
            let lower = text.lowercased()
            if lower.hasPrefix("lmtp:") {
                throw node.error("smtp-hosts: '\(text)': LMTP delivery is not supported by Peregrine (SMTP only); "
                                 + "it changes delivery, so it is refused rather than ignored")
            }
            if lower.hasPrefix("smtp:") { text.removeFirst(5) }
            let host = try node.parse(text, ConfigValue.hostPort)
            if host.port == 0 { throw node.error("smtp-hosts: '\(text)': port 0") }
            hosts.append(host)
        }
        return hosts
    }

    /// `queue-to DOMAIN`: one domain name (no wildcard, no port), lower-cased.
    static func queueTo(_ node: ConfigNode) throws(ConfigError) -> String {
        let name = try node.singleArgument().lowercased()
        let valid = !name.isEmpty && name.count <= 253 && !name.hasPrefix(".") && !name.hasSuffix(".")
            && name.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" || $0 == "." || $0 == "_" }
        guard valid else { throw node.error("queue-to: '\(name)' is not a domain name (the queue to put this domain's mail in)") }
        return name
    }

    /// `max-msg-rate` / `backoff-max-msg-rate`: a rate, or `0` (also `0/h`,
    /// as real configs write it): deliver nothing. Returns nil for 0.
    static func rateOrZero(_ node: ConfigNode) throws(ConfigError) -> Rate? {
        let text = try node.singleArgument()
        let count = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)[0]
        if !count.isEmpty, count.allSatisfy({ $0 == "0" }) {
            if let slash = text.firstIndex(of: "/") {
                // `0/h`: the interval changes nothing, but a typo in it is still a typo.
                let interval = text[text.index(after: slash)...]
                do { _ = try ConfigValue.rate("1/" + interval) } catch {
                    throw node.error("\(node.name): '\(text)' is not a rate: '\(interval)' is not an interval "
                                     + "(0, 0/h: deliver nothing; else COUNT/INTERVAL such as 1000/h)")
                }
            }
            return nil
        }
        return try node.value(ConfigValue.rate)
    }
}
