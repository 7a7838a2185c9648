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

    func sign(_ message: UnsafeRawBufferPointer, config: PeregrineConfig, source: SourceSettings, vmta: String,
              recipientDomain: String, now: Int64) -> Outcome {
        var scopes: [DKIMSettings] = [source.dkim]
        if let v = config.virtualMTA(named: vmta) {
            scopes.append(v.dkim)
            scopes.append(contentsOf: v.domains.filter { Self.matches($0.pattern, recipientDomain, config) && $0.pattern != .any }.map(\.dkim))
            scopes.append(contentsOf: v.domains.filter { $0.pattern == .any }.map(\.dkim))
        }
        scopes.append(contentsOf: config.domains.filter { Self.matches($0.pattern, recipientDomain, config) && $0.pattern != .any }.map(\.dkim))
        scopes.append(contentsOf: config.domains.filter { $0.pattern == .any }.map(\.dkim))
        scopes.removeAll { $0.isEmpty }
        if scopes.isEmpty { return .unsigned }
        func first<T>(_ field: KeyPath<DKIMSettings, T?>) -> T? { scopes.lazy.compactMap { $0[keyPath: field] }.first }
        let keys = scopes.flatMap(\.keys)
        if let sign = first(\.sign), !sign { return .unsigned }
        let required = first(\.required) ?? false
        let fromDomain = Self.fromDomain(message)
        identities.removeAll(keepingCapacity: true)
        let canonicalization = first(\.canonicalization) ?? DKIMCanonicalizations()
        let headers = first(\.headers) ?? DKIMSigningIdentity.defaultHeaders
        let bodyLengthLimit = first(\.bodyLengthLimit) ?? false
        let expire = (first(\.expireAfter) ?? nil).map { Int64($0.components.seconds) }
        var seen: Set<String> = []
        func add(_ k: DKIMDomainKey, auid: String? = nil) {
            guard seen.insert("\(k.selector)\u{0}\(k.domain)\u{0}\(k.keyPath)").inserted,
                  let key = config.dkimKeys[k.keyPath] else { return }
            var identity = DKIMSigningIdentity(domain: k.domain, selector: k.selector, key: key,
                                               canonicalization: canonicalization, headers: headers,
                                               bodyLengthLimit: bodyLengthLimit, expireAfterSeconds: expire)
            identity.agentIdentifier = auid
            identities.append(identity)
        }
        // dkim-identity: the From domain's keys (default), or a named identity's
        // keys with its i= (its domain must be d= or under it, RFC 6376 §3.5).
        switch first(\.identity) ?? .senderOrFrom {
        case .senderOrFrom:
            if let fromDomain {
                for k in keys where Self.aligned(fromDomain, k.domain) { add(k) }
            }
        case .fixed(let id):
            for k in keys where Self.aligned(id.domain, k.domain) { add(k, auid: id.auid) }
        }
        if identities.isEmpty, let fallback = first(\.identityFallback) {
            for k in keys where Self.aligned(fallback.domain, k.domain) { add(k, auid: fallback.auid) }
        }
        let aligned = !identities.isEmpty
        if let esp = first(\.alsoSignAs) {
            for k in keys where k.domain == esp { add(k) }
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
            try signer.sign(message: message, identities: identities, now: now, into: &header)
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
