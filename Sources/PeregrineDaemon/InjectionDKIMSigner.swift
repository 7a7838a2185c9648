import PeregrineIO
import PeregrineHTTP
import PeregrineSMTP
import PeregrineDKIM
import PeregrineEngine

/// DKIM signing at injection, one per loop (`LoopWorker.dkim`): the message
/// is signed once, as it is spooled, with the identities its scopes give.
/// Why at injection and not at delivery: ARCHITECTURE.md § DKIM.
///
/// Scopes, most specific first: the client's `<source>`, the chosen
/// `<virtual-mta>`, its nested `<domain>` for the first recipient's domain,
/// the top-level `<domain>` for it, then `<domain *>`. A setting comes from
/// the first scope that sets it; the `domain-key`s of all scopes are candidates.
/// Keys whose domain is the From domain or a parent of it (DMARC relaxed
/// alignment) sign; so do the keys of `dkim-also-sign-as`. `dkim-identity`
/// names another identity to sign as (third-party signing, with `i=`), and
/// `dkim-identity-fallback` one for messages whose identity has no key. With
/// no key for either the message goes out unsigned by them, or is refused
/// when `dkim-required yes`.
final class InjectionDKIMSigner {
    private let signer = DKIMSigner()
    /// How long each signing took, all of a message's signatures together (`/metrics`).
    var signingTime = PrometheusHistogram(bounds: LatencyMetrics.dkimSigningBounds)
    private var identities: [DKIMSigningIdentity] = []
    /// The DKIM-Signature fields of the last `sign` (reused).
    private(set) var header: [UInt8] = []

    enum Outcome {
        /// Nothing to sign with (no key applies, or `dkim-sign no`).
        case unsigned
        /// `header` holds the fields to put before the message.
        case signed(count: Int)
        case refused(SMTPReply)
    }

    /// The scopes of the current message, most specific first (reused).
    private var scopes: [DKIMSettings] = []
    /// The header fields of the message being signed (reused).
    var fields = DKIMHeaderFields()
    /// Dropped ranges, merged (reused; InjectionDKIMSigner+Fields.swift).
    var mergedDrops: [Range<Int>] = []

    /// Signs `message` (the HTTP API's: its header section is scanned here).
    func sign(_ message: UnsafeRawBufferPointer, config: PeregrineConfig, source: SourceSettings, vmta: String,
              recipientDomain: String, now: Int64) -> Outcome {
        fields.parse(message)
        return signDescribed(message, config: config, source: source, vmta: vmta, recipientDomain: recipientDomain, now: now)
    }

    /// Signs `message`, whose header section `fields` describes.
    func signDescribed(_ message: UnsafeRawBufferPointer, config: PeregrineConfig, source: SourceSettings,
                               vmta: String, recipientDomain: String, now: Int64) -> Outcome {
        // Built in a reused array, without filter/map/flatMap copies: this runs per message.
        scopes.removeAll(keepingCapacity: true)
        if !source.dkim.isEmpty { scopes.append(source.dkim) }
        if let v = config.virtualMTA(named: vmta) {
            if !v.dkim.isEmpty { scopes.append(v.dkim) }
            for d in v.domains where d.pattern != .any && !d.dkim.isEmpty && Self.matches(d.pattern, recipientDomain, config) {
                scopes.append(d.dkim)
            }
            for d in v.domains where d.pattern == .any && !d.dkim.isEmpty { scopes.append(d.dkim) }
        }
        for d in config.domains where d.pattern != .any && !d.dkim.isEmpty && Self.matches(d.pattern, recipientDomain, config) {
            scopes.append(d.dkim)
        }
        for d in config.domains where d.pattern == .any && !d.dkim.isEmpty { scopes.append(d.dkim) }
        if scopes.isEmpty { return .unsigned }
        func first<T>(_ field: KeyPath<DKIMSettings, T?>) -> T? {
            for s in scopes { if let v = s[keyPath: field] { return v } }
            return nil
        }
        if let sign = first(\.sign), !sign { return .unsigned }
        let required = first(\.required) ?? false
        let fromDomain = DKIMMessageHeaders.fromDomain(message, fields: fields)
        identities.removeAll(keepingCapacity: true)
        let canonicalization = first(\.canonicalization) ?? DKIMCanonicalizations()
        let headers = first(\.headers) ?? DKIMSigningIdentity.defaultHeaders
        let bodyLengthLimit = first(\.bodyLengthLimit) ?? false
        let expire = (first(\.expireAfter) ?? nil).map { Int64($0.components.seconds) }
        // Every key of every scope is a candidate; one identity per (selector, domain, key file).
        func add(_ k: DKIMDomainKey, auid: String? = nil) {
            guard let key = config.dkimKeys[k.keyPath],
                  !identities.contains(where: { $0.key === key && $0.selector == k.selector && $0.domain == k.domain }) else { return }
            var identity = DKIMSigningIdentity(domain: k.domain, selector: k.selector, key: key,
                                               canonicalization: canonicalization, headers: headers,
                                               bodyLengthLimit: bodyLengthLimit, expireAfterSeconds: expire)
            identity.agentIdentifier = auid
            identities.append(identity)
        }
        func addKeys(alignedWith domain: String, auid: String? = nil) {
            for s in scopes { for k in s.keys where Self.aligned(domain, k.domain) { add(k, auid: auid) } }
        }
        // dkim-identity: the From domain's keys (default), or a named identity's
        // keys with its i= (its domain must be d= or under it, RFC 6376 §3.5).
        switch first(\.identity) ?? .senderOrFrom {
        case .senderOrFrom:
            if let fromDomain { addKeys(alignedWith: fromDomain) }
        case .fixed(let id):
            addKeys(alignedWith: id.domain, auid: id.auid)
        }
        if identities.isEmpty, let fallback = first(\.identityFallback) {
            addKeys(alignedWith: fallback.domain, auid: fallback.auid)
        }
        let aligned = !identities.isEmpty
        if let esp = first(\.alsoSignAs) {
            for s in scopes { for k in s.keys where k.domain == esp { add(k) } }
        }
        if !aligned && required {
            let what = fromDomain.map { "From domain \($0)" } ?? "a message without a From domain"
            return .refused(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1),
                                      "no DKIM key for \(what) (dkim-required)"))
        }
        if identities.isEmpty { return .unsigned }
        header.removeAll(keepingCapacity: true)
        let started = monotonicNanoseconds()
        defer { signingTime.observe(seconds: Double(monotonicNanoseconds() &- started) / 1e9) }
        do {
            try signer.sign(message: message, fields: fields, identities: identities, now: now, into: &header)
        } catch {
            if required {
                return .refused(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1), "cannot DKIM-sign: \(error)"))
            }
            return .unsigned
        }
        return .signed(count: identities.count)
    }

    static func matches(_ pattern: DomainBlock.Pattern, _ domain: String, _ config: PeregrineConfig) -> Bool {
        switch pattern {
        case .any: return true
        case .name(let n): return n == domain
        case .macro(let m): return config.domainMacros[m]?.contains(domain) ?? false
        case .subdomains: return pattern.matches(domain)
        }
    }

    static func aligned(_ fromDomain: String, _ signingDomain: String) -> Bool {
        DKIMMessageHeaders.aligned(fromDomain, signingDomain)
    }

    static func fromDomain(_ message: UnsafeRawBufferPointer) -> String? {
        DKIMMessageHeaders.fromDomain(message)
    }
}
