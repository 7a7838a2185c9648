/// Which block each known directive belongs to, so that a directive in the
/// wrong place gets "belongs in <domain>" instead of a bare "unknown".
enum ConfigContext {
    static let homes: [String: String] = {
        var map: [String: String] = [:]
        for name in DomainOverrides.directiveNames { map[name] = "<domain>" }
        for name in ["always-allow-relaying", "smtp-service", "process-x-virtual-mta", "process-x-job",
                     "default-virtual-mta", "max-message-size", "require-auth", "add-received-header",
                     "allow-unencrypted-plain-auth", "log-connections", "log-commands", "log-data",
                     "add-message-id-header", "add-date-header", "remove-received-headers", "retain-x-virtual-mta"] {
            map[name] = "<source>"
        }
        map["smtp-source-host"] = "<virtual-mta>"
        for name in DKIMSettings.directiveNames { map[name] = "<virtual-mta>, <domain> or <source>" }
        map["virtual-mta"] = "<virtual-mta-pool>"
        map["reply"] = "<smtp-pattern-list>"
        for name in ["records", "max-size", "move-interval", "record-fields", "delete-after", "world-readable"] { map[name] = "<acct-file>" }
        for name in ["password", "password-hash"] { map[name] = "<smtp-user>" }
        for name in ["key-hash", "allowed-sender-domain"] { map[name] = "<api-key>" }
        for name in PeregrineConfig.globalDirectiveNames { map[name] = "the top level" }
        return map
    }()

    /// ` (NAME belongs in <block>)` or empty.
    static func hint(for name: String) -> String {
        guard let home = homes[name] else { return "" }
        return " (\(name) belongs in \(home))"
    }
}
