import PeregrineConfig

/// PowerMTA directives that tune PowerMTA's own internals (its spool sync, its
/// license, its web monitor, its Windows build) and have no counterpart in
/// Peregrine. A migrated config keeps them: each is accepted with one warning
/// naming it as not applicable (DESIGN.md principle 9: never silently ignored).
/// Nothing here may change what is delivered, to whom, or how securely: such
/// directives are implemented or refused, never listed here.
enum NotApplicableDirectives {
    enum Context: Hashable {
        case global, domain, source, virtualMTA, spool
    }

    /// Name → why it does not apply, per context.
    static let reasons: [Context: [String: String]] = [
        .global: [
            "sync-msg-create": "PowerMTA's spool sync tuning; Peregrine always fsyncs a message before accepting it",
            "sync-msg-update": "PowerMTA's spool sync tuning; Peregrine's spool journals every recipient state change",
            "license-key": "PowerMTA's license",
            "license-file": "PowerMTA's license",
            "http-redirect-to-https": "PowerMTA's web monitor option",
            "http-mgmt-ssl-certificate": "PowerMTA's web monitor option",
            "http-logo": "PowerMTA's web monitor option",
            "http-title": "PowerMTA's web monitor option",
            "pmtahttpd-port": "PowerMTA's web monitor daemon",
            "max-events-recorded": "PowerMTA's web monitor event history",
            "smtp-server-dummy-tls-certificate": "PowerMTA's Windows-only placeholder certificate",
            "check-spool-free-space": "PowerMTA's spool monitor; Peregrine stops accepting when the spool cannot be written",
            "process-priority": "PowerMTA's process scheduling; use the service manager's Nice=",
            "processes": "PowerMTA's worker processes; Peregrine uses 'threads'",
            "dns-use-tcp": "PowerMTA's resolver tuning; Peregrine retries over TCP when a reply is truncated",
            "dns-max-concurrent": "PowerMTA's resolver tuning",
            "auto-update-disabled": "PowerMTA's updater",
        ],
        .domain: [
            "max-events-recorded": "PowerMTA's web monitor event history",
            "log-resolution": "PowerMTA's DNS resolution trace",
            "ignore-8bitmime": "PowerMTA's 8BITMIME override; Peregrine relays 8-bit bodies only to servers that offer 8BITMIME",
        ],
        .source: [
            "hide-message-source": "PowerMTA's Received-header cosmetics",
            "always-allow-api-submission": "PowerMTA's HTTP submission API; Peregrine's HTTP injection API grants rights by <api-key>, never by client address",
        ],
        .virtualMTA: [
            "max-events-recorded": "PowerMTA's web monitor event history",
        ],
        .spool: [
            "deliver-only": "PowerMTA's multi-spool option; Peregrine has one spool, which it delivers from and accepts into",
            "delete-file-holders": "PowerMTA's spool file layout",
        ],
    ]

    /// PowerMTA directives that change what is delivered, where, or how, and
    /// that Peregrine does not implement yet: refused with this reason rather
    /// than "unknown", so a migration knows what it is giving up. (Never
    /// accepted: each would silently change delivery.) Remove a name here when
    /// it is implemented.
    static let unsupported: [Context: [String: String]] = [:]

    /// The refusal for a directive Peregrine does not implement yet, if `node` is one here.
    static func refusal(_ node: ConfigNode, in context: Context) -> ConfigError? {
        guard !node.isBlock, let reason = unsupported[context]?[node.name] else { return nil }
        return node.error("\(node.name) is not supported by Peregrine yet (\(reason)); "
                          + "it changes delivery, so it is refused rather than ignored")
    }

    /// Records the warning and returns true when `node` is a not-applicable directive here.
    static func warnIfListed(_ node: ConfigNode, in context: Context, diagnostics: inout ConfigDiagnostics) -> Bool {
        guard !node.isBlock, let reason = reasons[context]?[node.name] else { return false }
        diagnostics.warn(node, "not applicable to Peregrine, ignored (\(reason))")
        return true
    }

    /// Records the refusal, or the warning, and returns true when `node` is either here.
    static func handled(_ node: ConfigNode, in context: Context, diagnostics: inout ConfigDiagnostics) -> Bool {
        if context == .domain, node.name == "dk-sign" {
            // DomainKeys (RFC 4870, historic): 'no' is what Peregrine does; 'yes' asks for a signature it cannot make.
            switch (try? node.value(ConfigValue.bool)) {
            case false?: diagnostics.warn(node, "not applicable to Peregrine, ignored (DomainKeys signing, RFC 4870, is historic; Peregrine signs DKIM only)")
            case true?: diagnostics.record(node.error("dk-sign yes is refused: Peregrine does not make DomainKeys (RFC 4870, historic) signatures; use dkim-sign"))
            case nil: diagnostics.record(node.error("dk-sign: '\(node.rawArguments)' is not yes or no"))
            }
            return true
        }
        if let refusal = refusal(node, in: context) {
            diagnostics.record(refusal)
            return true
        }
        return warnIfListed(node, in: context, diagnostics: &diagnostics)
    }
}
