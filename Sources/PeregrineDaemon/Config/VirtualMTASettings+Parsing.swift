import PeregrineConfig
import PeregrineIO

extension DomainBlock {
    /// Parses `<domain NAME|*|$macro>`; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// Parses `<domain NAME|*|$macro>`, recording each directive's error; a bad
    /// pattern in the tag throws.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let text = try block.arguments(count: 1...1, usage: "one domain, *, *.DOMAIN, [*.]DOMAIN or $macro, as in <domain gmail.com>")[0]
        let pattern: Pattern
        if text == "*" {
            pattern = .any
        } else if text.hasPrefix("[*.]") || text.hasPrefix("*.") {
            let withParent = text.hasPrefix("[*.]")
            let parent = try block.parse(String(text.dropFirst(withParent ? 4 : 2)), ConfigValue.domainName).lowercased()
            pattern = .subdomains(of: parent, includingParent: withParent)
        } else if text.hasPrefix("$") {
            let name = String(text.dropFirst())
            guard BlockConfig.isValidName(name) else { throw block.error("'\(text)' is not a macro reference") }
            pattern = .macro(name.lowercased())
        } else {
            pattern = .name(try block.parse(text, ConfigValue.domainName))
        }
        self.init(pattern: pattern, overrides: DomainOverrides(block: block, diagnostics: &diagnostics), location: block.location)
        // DomainOverrides leaves the DKIM directives to this.
        for node in block.children where !node.isBlock && DKIMSettings.directiveNames.contains(node.name) {
            do { _ = try dkim.apply(node) } catch { diagnostics.record(error) }
        }
    }
}

extension VirtualMTASettings {
    /// Parses `<virtual-mta NAME>` with `smtp-source-host` and nested `<domain>` blocks; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each directive's error and going on.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let name = try block.arguments(count: 1...1, usage: "one name, as in <virtual-mta vmta1>")[0]
        self.init(name: name.lowercased(), location: block.location)
        var seenDomains: [DomainBlock.Pattern: Int] = [:]
        // `host-name` in a virtual-mta (PowerMTA's) names it in EHLO, over
        // smtp-source-host's name, wherever it stands in the block.
        var explicitHostName: String?
        var hostNameLine: Int?
        for node in block.children {
            if NotApplicableDirectives.handled(node, in: .virtualMTA, diagnostics: &diagnostics) { continue }
            if !node.isBlock && node.name == "host-name" {
                if let line = hostNameLine {
                    diagnostics.record(node.error("host-name is already set in this block at line \(line)"))
                    continue
                }
                hostNameLine = node.location.line
                do { explicitHostName = try node.value(ConfigValue.domainName) } catch { diagnostics.record(error) }
                continue
            }
            do { try apply(node, in: block, seenDomains: &seenDomains, diagnostics: &diagnostics) } catch {
                diagnostics.record(error)
            }
        }
        if let explicitHostName { hostName = explicitHostName }
    }

    private mutating func apply(_ node: ConfigNode, in block: ConfigNode, seenDomains: inout [DomainBlock.Pattern: Int],
                                diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
            if node.isBlock {
                guard node.name == "domain" else {
                    throw node.error("block \(node.displayName) is not allowed inside \(block.displayName)")
                }
                let domain = try DomainBlock(block: node, diagnostics: &diagnostics)
                if let line = seenDomains[domain.pattern] {
                    throw node.error("\(node.displayName) is already defined in this virtual-mta at line \(line)")
                }
                seenDomains[domain.pattern] = node.location.line
                domains.append(domain)
                return
            }
            switch node.name {
            case "smtp-source-host":
                let args = try node.arguments(count: 2...2, usage: "IP HOSTNAME")
                guard IPNetwork.numericAddress(args[0]) != nil else {
                    throw node.error("smtp-source-host: '\(args[0])' is not a numeric IPv4 or IPv6 address")
                }
                hostName = try node.parse(args[1], ConfigValue.domainName)
                sourceIP = args[0]
            case "max-smtp-out":
                maxSMTPOut = try node.integer(in: 1...100_000)
            default:
                if try dkim.apply(node) { return }
                throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
            }
    }
}

extension VirtualMTAPool {
    /// Parses `<virtual-mta-pool NAME>` with `virtual-mta NAME` lines; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        try self.init(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// As `init(block:)`, recording each line's error and going on.
    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        let name = try block.arguments(count: 1...1, usage: "one name, as in <virtual-mta-pool pool1>")[0]
        var members: [String] = []
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            do throws(ConfigError) {
                guard node.name == "virtual-mta" else {
                    throw node.error("unknown directive '\(node.name)' in \(block.displayName) (expected: virtual-mta NAME)")
                }
                let member = try node.singleArgument().lowercased()
                if members.contains(member) { throw node.error("virtual-mta \(member) is listed twice in this pool") }
                members.append(member)
            } catch {
                diagnostics.record(error)
            }
        }
        // A pool whose lines were all wrong has those errors already; no second one for the same lines.
        guard !members.isEmpty || block.children.contains(where: { !$0.isBlock }) else {
            throw block.error("\(block.displayName) lists no virtual-mta")
        }
        self.init(name: name.lowercased(), members: members, location: block.location)
    }
}

extension ConfigValue {
    /// A domain or host name (letters, digits, `-`, `_`, dots), lower-cased.
    public static func domainName(_ text: String) throws(ConfigValueError) -> String {
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        let valid = !text.isEmpty && text.count <= 253 && labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.unicodeScalars.allSatisfy { s in
                s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "-" || s == "_")
            }
        }
        guard valid else { throw ConfigValueError("'\(text)' is not a domain name") }
        return text.lowercased()
    }
}
