import PeregrineIO
import PeregrineConfig
import PeregrineAccounting
import PeregrineEngine

extension PeregrineConfig {
    static let globalDirectiveNames = [
        "smtp-listener", "http-mgmt-port", "http-access", "spool", "io-backend", "threads",
        "dns-server", "domain-macro", "host-name", "postmaster",
        "smtp-server-tls-certificate", "smtp-server-tls-key", "shutdown-timeout",
        "http-mgmt-token-file", "max-smtp-in", "max-smtp-in-errors", "smtp-idle-timeout", "smtp-session-timeout",
        "relay-domain", "dsn-max-rate-per-sender", "total-max-smtp-out", "dummy-smtp-port", "max-queued-in-memory",
    ] + SMTPAuthSettings.globalDirectiveNames + RuntimeSettings.directiveNames + ClusterSettings.directiveNames
        + HTTPInjectionSettings.globalDirectiveNames

    /// Reads, parses and checks a config file; throws the first error.
    public static func load(path: String) throws(ConfigError) -> PeregrineConfig {
        var diagnostics = ConfigDiagnostics()
        let config = load(path: path, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
        return config
    }

    /// Reads, parses and checks a config file, recording every error and
    /// warning. The config returned is only usable when `diagnostics` has no errors.
    public static func load(path: String, diagnostics: inout ConfigDiagnostics) -> PeregrineConfig {
        PeregrineConfig(nodes: BlockConfig.load(path: path, diagnostics: &diagnostics), diagnostics: &diagnostics)
    }

    /// Parses and checks config text; `file` is used in messages. Throws the first error.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> PeregrineConfig {
        var diagnostics = ConfigDiagnostics()
        let config = parse(text, file: file, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
        return config
    }

    /// Parses and checks config text, recording every error and warning.
    public static func parse(_ text: String, file: String, diagnostics: inout ConfigDiagnostics) -> PeregrineConfig {
        PeregrineConfig(nodes: BlockConfig.parse(text, file: file, diagnostics: &diagnostics), diagnostics: &diagnostics)
    }

    /// Builds the config from a parsed tree; throws the first error.
    public init(nodes: [ConfigNode]) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        self.init(nodes: nodes, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
    }

    /// Builds the config from a parsed tree, then checks cross-references
    /// (default-virtual-mta, smtp-pattern-list, $macro, pool members). Each
    /// directive's error is recorded and the next directive is read.
    public init(nodes: [ConfigNode], diagnostics: inout ConfigDiagnostics) {
        self.init()
        var seenSingletons: [String: ConfigLocation] = [:]
        var seenBlocks: [String: ConfigNode] = [:]
        for node in nodes {
            do throws(ConfigError) {
                if node.isBlock && node.name == "spool" {
                    // `<spool PATH>` is PowerMTA's block form of `spool PATH`: one spool either way.
                    if let first = seenSingletons["spool"] {
                        throw node.error("the spool is already set at \(Self.place(first, from: node.location)) (Peregrine uses one spool directory)")
                    }
                    seenSingletons["spool"] = node.location
                    try applySpoolBlock(node, diagnostics: &diagnostics)
                } else if node.isBlock {
                    try applyBlock(node, seen: &seenBlocks, diagnostics: &diagnostics)
                } else if NotApplicableDirectives.handled(node, in: .global, diagnostics: &diagnostics) {
                    continue
                } else {
                    if !["smtp-listener", "http-access", "dns-server", "domain-macro", "relay-domain"].contains(node.name) {
                        // total-max-smtp-in is PowerMTA's name for what max-smtp-in sets here.
                        let key = node.name == "total-max-smtp-in" ? "max-smtp-in" : node.name
                        if let first = seenSingletons[key] {
                            throw node.error("\(node.name) is already set at \(Self.place(first, from: node.location))"
                                             + (key == node.name ? "" : " (as \(key))"))
                        }
                        seenSingletons[key] = node.location
                    }
                    try applyGlobal(node)
                }
            } catch {
                diagnostics.record(error)
            }
        }
        do { try checkServerTLS(nodes: nodes) } catch { diagnostics.record(error) }
        do { try runtime.check(nodes: nodes) } catch { diagnostics.record(error) }
        checkReferences(nodes: nodes, diagnostics: &diagnostics)
        loadDKIMKeys(diagnostics: &diagnostics)
        checkAuth(nodes: nodes, diagnostics: &diagnostics)
        checkHTTPInjection(nodes: nodes, diagnostics: &diagnostics)
        locatedWarnings = diagnostics.sortedWarnings
    }

    /// `line N` in the same file, else `file:N` (the first one was in an included file).
    static func place(_ location: ConfigLocation, from here: ConfigLocation) -> String {
        location.file == here.file ? "line \(location.line)" : location.description
    }

    /// `<spool PATH>` with PowerMTA's per-spool options, none of which apply to Peregrine's one spool.
    private mutating func applySpoolBlock(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        spoolPath = try node.arguments(count: 1...1, usage: "one directory, as in <spool /var/spool/peregrine>")[0]
        for child in node.directivesOnly(diagnostics: &diagnostics)
        where !NotApplicableDirectives.warnIfListed(child, in: .spool, diagnostics: &diagnostics) {
            diagnostics.record(child.error("unknown directive '\(child.name)' in \(node.displayName)"))
        }
    }

    /// Both TLS files or neither; `tls=yes` listeners need them.
    private mutating func checkServerTLS(nodes: [ConfigNode]) throws(ConfigError) {
        let cert = nodes.first { !$0.isBlock && $0.name == "smtp-server-tls-certificate" }
        let key = nodes.first { !$0.isBlock && $0.name == "smtp-server-tls-key" }
        switch (cert, key) {
        case (nil, nil):
            if let first = implicitTLSListeners.first,
               let node = nodes.first(where: { $0.name == "smtp-listener" && $0.arguments.count > 1 }) {
                throw node.error("smtp-listener \(first) tls=yes needs smtp-server-tls-certificate and smtp-server-tls-key")
            }
        case (let c?, nil):
            throw c.error("smtp-server-tls-certificate needs smtp-server-tls-key as well")
        case (nil, let k?):
            throw k.error("smtp-server-tls-key needs smtp-server-tls-certificate as well")
        case (let c?, let k?):
            serverTLS = ServerTLSSettings(certificateFile: try c.readableFile(), keyFile: try k.readableFile(),
                                          location: c.location, keyLocation: k.location)
        }
    }

    private mutating func applyGlobal(_ node: ConfigNode) throws(ConfigError) {
        switch node.name {
        case "dummy-smtp-port":
            // PowerMTA takes a port; an address may be given too. Loopback by
            // default: a listener that answers 250 to anything is for tests, not the world.
            let text = try node.singleArgument()
            let target = try node.parse(text.allSatisfy(\.isNumber) ? "127.0.0.1:" + text : text, ConfigValue.hostPort)
            guard let port = target.port, port > 0 else { throw node.error("dummy-smtp-port: '\(text)' has no port") }
            dummySMTPListener = try node.parse(text) { (_: String) throws(ConfigValueError) -> SocketAddress in
                try target.socketAddress(defaultPort: port)
            }
        case "smtp-listener":
            let args = node.arguments.isEmpty ? [try node.singleArgument()]
                : try node.arguments(count: 1...2, usage: "ADDRESS:PORT [tls=yes|no]")
            let target = try node.parse(args[0], ConfigValue.hostPort)
            let address = try node.parse(args[0]) { (_: String) throws(ConfigValueError) -> SocketAddress in
                try target.socketAddress(defaultPort: 25)
            }
            smtpListeners.append(address)
            if args.count == 2 {
                let option = args[1].lowercased()
                guard option.hasPrefix("tls=") else {
                    throw node.error("smtp-listener: unknown option '\(args[1])' (expected tls=yes or tls=no)")
                }
                if try node.parse(String(option.dropFirst(4)), ConfigValue.bool) { implicitTLSListeners.append(address) }
            }
        case "smtp-server-tls-certificate", "smtp-server-tls-key":
            _ = try node.singleArgument() // both checked together once the file is read
        case "http-mgmt-port":
            let text = try node.singleArgument()
            if let port = UInt16(text) {
                guard port > 0 else { throw node.error("http-mgmt-port: '0' is not a port number (1-65535)") }
                httpManagement = try node.parse("127.0.0.1") { (ip: String) throws(ConfigValueError) -> SocketAddress in
                    try HostPort(host: ip, port: port).socketAddress(defaultPort: port)
                }
            } else {
                let target = try node.parse(text, ConfigValue.hostPort)
                guard target.port != nil else { throw node.error("http-mgmt-port: expected PORT or ADDRESS:PORT, got '\(text)'") }
                httpManagement = try node.parse(text) { (_: String) throws(ConfigValueError) -> SocketAddress in
                    try target.socketAddress(defaultPort: 0)
                }
            }
        case "http-access":
            let args = try node.arguments(count: 2...2, usage: "CIDR admin|monitor|none")
            let network = try node.parse(args[0], ConfigValue.network)
            guard let level = HTTPAccessRule.Level(rawValue: args[1].lowercased()) else {
                throw node.error("http-access: unknown access level '\(args[1])' (expected admin, monitor or none)")
            }
            httpAccess.append(HTTPAccessRule(network: network, level: level))
        case "spool":
            spoolPath = try node.singleArgument()
        case "http-mgmt-token-file":
            httpManagementTokenFile = try node.singleArgument()
        case "max-smtp-in", "total-max-smtp-in":
            maxSMTPIn = try node.integer(in: 1...1_000_000)
        case "total-max-smtp-out":
            totalMaxSMTPOut = try node.integer(in: 1...1_000_000)
        case "max-queued-in-memory":
            // Recipients the scheduler holds; the rest of the queue stays in the spool (QueuePaging.swift).
            maxQueuedInMemory = try node.singleArgument().lowercased() == "unlimited"
                ? nil : try node.integer(in: 1...1_000_000_000)
        case "smtp-server-tls-allow-tlsv1", "smtp-server-tls-allow-tlsv1.1":
            // Injection TLS is 1.2 and later (TLSContext.server); 'no' states exactly that.
            if try node.value(ConfigValue.bool) {
                throw node.error("\(node.name) yes is refused: Peregrine accepts TLS 1.2 and later only (RFC 8996 deprecates 1.0 and 1.1)")
            }
        case "smtp-server-tls-allow-tlsv1.2", "smtp-server-tls-allow-tlsv1.3":
            if !(try node.value(ConfigValue.bool)) {
                throw node.error("\(node.name) no is not supported yet: Peregrine's injection listeners always allow TLS 1.2 and 1.3; "
                                 + "it is refused rather than ignored")
            }
        case "max-smtp-in-errors":
            maxSMTPInErrors = try node.integer(in: 1...10_000)
        case "smtp-idle-timeout":
            smtpIdleTimeout = try node.value(ConfigValue.duration)
            guard smtpIdleTimeout >= .milliseconds(100) else {
                throw node.error("smtp-idle-timeout: '\(node.rawArguments)' is too short (at least 100ms; RFC 5321 asks for 5m)")
            }
        case "smtp-session-timeout":
            smtpSessionTimeout = try node.value(ConfigValue.durationOrNever)
            if let t = smtpSessionTimeout, t < .milliseconds(100) {
                throw node.error("smtp-session-timeout: '\(node.rawArguments)' is too short (at least 100ms, or never)")
            }
        case "io-backend":
            let text = try node.singleArgument()
            switch BackendKind.parse(text) {
            case .success(let kind): ioBackend = kind
            case .failure:
                let names = BackendKind.allCases.map(\.rawValue).joined(separator: ", ")
                throw node.error("io-backend: unknown backend '\(text)' (expected one of: \(names))")
            }
        case "threads":
            threads = try node.integer(in: 1...1024)
        case "dns-server":
            let target = try node.value(ConfigValue.hostPort)
            dnsServers.append(try node.parse(node.arguments[0]) { (_: String) throws(ConfigValueError) -> SocketAddress in
                try target.socketAddress(defaultPort: 53)
            })
        case "domain-macro":
            guard node.arguments.count >= 2 else {
                throw node.error("domain-macro expects NAME domain,domain,…, got '\(node.rawArguments)'")
            }
            let name = node.arguments[0].lowercased()
            guard BlockConfig.isValidName(name) else { throw node.error("domain-macro: '\(node.arguments[0])' is not a macro name") }
            if domainMacros[name] != nil { throw node.error("domain-macro \(name) is already defined") }
            var list: [String] = []
            for item in node.arguments.dropFirst().joined(separator: ",").split(separator: ",") {
                list.append(try node.parse(String(item), ConfigValue.domainName))
            }
            guard !list.isEmpty else { throw node.error("domain-macro \(name) lists no domains") }
            domainMacros[name] = list
        case "webhook-max-age":
            webhookMaxAge = try node.value(ConfigValue.duration)
            guard webhookMaxAge >= .seconds(1) else { throw node.error("webhook-max-age: at least 1s") }
        case "shutdown-timeout":
            shutdownTimeout = try node.value(ConfigValue.duration)
        case "host-name":
            hostName = try node.value(ConfigValue.domainName)
        case "dsn-max-rate-per-sender":
            dsnMaxRatePerSender = try node.value(ConfigValue.rate)
        case "postmaster":
            let address = try node.singleArgument()
            guard address.contains("@"), !address.hasPrefix("@"), !address.hasSuffix("@") else {
                throw node.error("postmaster: '\(address)' is not an email address")
            }
            postmaster = address
        default:
            if try applyAuthGlobal(node) { return }
            if try applyHTTPInjectionGlobal(node) { return }
            if try runtime.apply(node) { return }
            if try cluster.apply(node) { return }
            if let home = ConfigContext.homes[node.name] {
                throw node.error("\(node.name) is not allowed at the top level (it belongs in \(home))")
            }
            throw node.error("unknown directive '\(node.name)'")
        }
    }

    private mutating func applyBlock(_ node: ConfigNode, seen: inout [String: ConfigNode],
                                     diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        // Duplicate named blocks are an error (a second <domain gmail.com> is almost
        // always a mistake), except <domain *>: PowerMTA merges repeated ones (configs
        // split with include each add one), the later setting winning; a directive
        // set in both is pointed out.
        let key = "\(node.name) \(node.arguments.joined(separator: " ").lowercased())"
        if let first = seen[key] {
            guard node.name == "domain" && node.arguments == ["*"] else {
                throw node.error("\(node.displayName) is already defined at \(Self.place(first.location, from: node.location))")
            }
            for child in node.children where !child.isBlock {
                if let earlier = first.children.last(where: { !$0.isBlock && $0.name == child.name }) {
                    diagnostics.warn(child, "\(child.name) is also set for \(node.displayName) at "
                                     + "\(Self.place(earlier.location, from: child.location)); this later one applies")
                }
            }
            var merged = first
            merged.children += node.children
            seen[key] = merged
        } else {
            seen[key] = node
        }
        switch node.name {
        case "source":
            sources.append(try SourceSettings(block: node, diagnostics: &diagnostics))
        case "virtual-mta":
            virtualMTAs.append(try VirtualMTASettings(block: node, diagnostics: &diagnostics))
        case "virtual-mta-pool":
            virtualMTAPools.append(try VirtualMTAPool(block: node, diagnostics: &diagnostics))
        case "domain":
            domains.append(try DomainBlock(block: node, diagnostics: &diagnostics))
        case "smtp-pattern-list":
            let list = try SMTPPatternList(block: node, diagnostics: &diagnostics)
            patternLists[list.name.lowercased()] = list
        case "rewrite-list":
            let list = try RewriteList(block: node, diagnostics: &diagnostics)
            rewriteLists[list.name] = list
        case "pattern-list":
            let list = try VMTAPatternList(block: node, diagnostics: &diagnostics)
            vmtaPatternLists[list.name] = list
        case "acct-file":
            accountingFiles.append(try AccountingFileOptions(block: node, diagnostics: &diagnostics))
        case "bounce-processor":
            bounceProcessor = try InboundProcessorSettings(block: node, diagnostics: &diagnostics)
        case "feedback-loop-processor":
            feedbackLoopProcessor = try InboundProcessorSettings(block: node, diagnostics: &diagnostics)
        case "bounce-category-patterns":
            bounceClassifier = try BounceClassifier(block: node, diagnostics: &diagnostics)
        case "smtp-user":
            try applySMTPUser(node, diagnostics: &diagnostics)
        case "api-key":
            try applyAPIKey(node, diagnostics: &diagnostics)
        case "webhook":
            try applyWebhook(node, diagnostics: &diagnostics)
        default:
            throw node.error("unknown block <\(node.name)>")
        }
    }
}
