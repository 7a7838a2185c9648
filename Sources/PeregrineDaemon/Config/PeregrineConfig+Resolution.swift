import PeregrineIO
import PeregrineConfig
import PeregrineEngine

extension PeregrineConfig {
    /// The effective settings of queue `domain/vmta`.
    ///
    /// Layers, least to most specific, each overriding what it sets:
    /// built-in defaults → `<domain *>` → the same inside `<virtual-mta vmta>`
    /// → `<domain $macro>` blocks whose macro lists the domain → the same inside
    /// the VMTA → `<domain *.parent>` / `<domain [*.]parent>`, shorter parents
    /// first → the same inside the VMTA → `<domain NAME>` → the same inside
    /// the VMTA. That is: how precisely the domain is named decides first,
    /// the VMTA second.
    /// Domain names compare case-insensitively. Cheap enough to call once per
    /// queue creation or reload; callers should keep the result with the queue.
    public func settings(forDomain domain: String, vmta: String? = nil) -> DomainSettings {
        let name = domain.lowercased()
        let nested = vmta.flatMap { virtualMTA(named: $0) }?.domains ?? []
        var applicable: [(rank: Int, layer: Int, index: Int, block: DomainBlock)] = []
        for (layer, blocks) in [domains, nested].enumerated() {
            for (index, block) in blocks.enumerated() {
                if let rank = specificity(of: block.pattern, for: name) { applicable.append((rank, layer, index, block)) }
            }
        }
        applicable.sort { ($0.rank, $0.layer, $0.index) < ($1.rank, $1.layer, $1.index) }
        var settings = DomainSettings()
        for a in applicable { a.block.overrides.apply(to: &settings) }
        return settings
    }

    /// How precisely a block names the domain, for ordering; nil when it does
    /// not apply. `*` 0, a macro listing it 1, a wildcard 2 + the parent's
    /// length (a longer parent is closer), the exact name last.
    private func specificity(of pattern: DomainBlock.Pattern, for domain: String) -> Int? {
        switch pattern {
        case .any: return 0
        case .macro(let macro): return domainMacros[macro]?.contains(domain) == true ? 1 : nil
        case .subdomains(let parent, _): return pattern.matches(domain) ? 2 + parent.utf8.count : nil
        case .name(let n): return n == domain ? Int.max : nil
        }
    }

    /// The `<source>` block for an injecting client: the longest matching prefix
    /// (IPv4-mapped IPv6 clients match IPv4 blocks). No match: no relaying.
    public func source(for client: SocketAddress) -> SourceSettings {
        source(forIP: client.ip)
    }

    /// As `source(for:)`, from a numeric address.
    public func source(forIP ip: String) -> SourceSettings {
        var best: SourceSettings?
        for source in sources {
            guard let network = source.network, network.contains(ip: ip) else { continue }
            if let current = best?.network, current.prefixLength >= network.prefixLength { continue }
            best = source
        }
        return best ?? SourceSettings()
    }

    /// The management access level of a client: the longest matching `http-access`
    /// rule; with no rules, loopback is admin and everything else none.
    public func httpAccessLevel(forIP ip: String) -> HTTPAccessRule.Level {
        var best: HTTPAccessRule?
        for rule in httpAccess where rule.network.contains(ip: ip) {
            if let current = best, current.network.prefixLength >= rule.network.prefixLength { continue }
            best = rule
        }
        if let best { return best.level }
        if httpAccess.isEmpty, let bytes = IPNetwork.numericAddress(ip) {
            let loopback4 = IPNetwork(address: [127, 0, 0, 0], prefixLength: 8)
            let loopback6 = IPNetwork(address: Array(repeating: 0, count: 15) + [1], prefixLength: 128)
            if loopback4.contains(bytes) || loopback6.contains(bytes) { return .admin }
        }
        return .none
    }
}
