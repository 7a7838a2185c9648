import PeregrineConfig

extension PeregrineConfig {
    /// Cross-reference checks, run after the whole file is read so that
    /// blocks may refer to each other in any order. `nodes` is the parsed tree,
    /// used to point errors at the referring line.
    func checkReferences(nodes: [ConfigNode], diagnostics: inout ConfigDiagnostics) {
        var blocksByLocation: [ConfigLocation: ConfigNode] = [:]
        func index(_ list: [ConfigNode]) {
            for node in list where node.isBlock {
                blocksByLocation[node.location] = node
                index(node.children)
            }
        }
        index(nodes)
        let unknown = ConfigLocation(file: "?", line: 0)

        /// The location of `directive value` inside the block at `blockLocation`, else the block's.
        func line(_ blockLocation: ConfigLocation?, _ directive: String, _ value: String) -> ConfigLocation {
            guard let blockLocation else { return unknown }
            let block = blocksByLocation[blockLocation]
            let hit = block?.children.first {
                $0.name == directive && $0.arguments.first?.lowercased() == value.lowercased()
            }
            return hit?.location ?? blockLocation
        }

        for pool in virtualMTAPools {
            if virtualMTA(named: pool.name) != nil {
                diagnostics.record(ConfigError(pool.location ?? unknown,
                                  "<virtual-mta-pool \(pool.name)> has the same name as a <virtual-mta>"))
            }
            for member in pool.members where virtualMTA(named: member) == nil {
                diagnostics.record(ConfigError(line(pool.location, "virtual-mta", member),
                                  "virtual-mta '\(member)' is not defined (pools list <virtual-mta> names)"))
            }
        }
        for source in sources {
            if let list = source.patternList, vmtaPatternLists[list] == nil {
                diagnostics.record(ConfigError(line(source.location, "pattern-list", list), "pattern-list '\(list)' is not defined"))
            }
            if let list = source.rewriteList, rewriteLists[list] == nil {
                diagnostics.record(ConfigError(line(source.location, "rewrite-list", list), "rewrite-list '\(list)' is not defined"))
            }
            if let name = source.defaultVirtualMTA, virtualMTANames(for: name).isEmpty {
                diagnostics.record(ConfigError(line(source.location, "default-virtual-mta", name),
                                  "default-virtual-mta '\(name)' is not a defined virtual-mta or virtual-mta-pool"))
            }
        }
        for list in vmtaPatternLists.values {
            for rule in list.rules where virtualMTANames(for: rule.virtualMTA).isEmpty {
                diagnostics.record(ConfigError(rule.location, "virtual-mta '\(rule.virtualMTA)' is not a defined virtual-mta or virtual-mta-pool"))
            }
        }
        for domain in domains + virtualMTAs.flatMap(\.domains) {
            if case .macro(let macro) = domain.pattern, domainMacros[macro] == nil {
                diagnostics.record(ConfigError(domain.location ?? unknown, "<domain $\(macro)>: domain-macro '\(macro)' is not defined"))
            }
            if cluster.redis == nil {
                // A cluster cap without the cluster would be parsed and ignored: refuse it.
                let caps = [("cluster-max-smtp-out", domain.overrides.clusterMaxSMTPOut != nil),
                            ("cluster-max-msg-rate", domain.overrides.clusterMaxMsgRate != nil)]
                for (name, isSet) in caps where isSet {
                    let at = domain.location.flatMap { blocksByLocation[$0]?.children.first { $0.name == name }?.location ?? $0 } ?? unknown
                    diagnostics.record(ConfigError(at, "\(name) needs cluster-redis (the cluster's shared limits live in Redis; CLUSTER.md)"))
                }
            }
            if let list = domain.overrides.smtpPatternList, patternLists[list.lowercased()] == nil {
                diagnostics.record(ConfigError(line(domain.location, "smtp-pattern-list", list),
                                  "smtp-pattern-list '\(list)' is not defined"))
            }
        }
    }
}
