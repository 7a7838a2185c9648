#if canImport(Glibc)
import Glibc
#endif
import PeregrineDKIM

/// Checks one message against a profile's bulk-sender rules with
/// PeregrineDKIM's verifier (keys from `--dkim-key`; no DNS). One per
/// connection: the verifier's hashing state is reused.
final class SinkBulkSenderCheck {
    private let verifier = DKIMVerifier()
    /// The message as received (dot-unstuffed), collected only for profiles with rules.
    var message: [UInt8] = []

    /// The rule the message fails and its reply (with `{from-domain}` filled), or nil.
    func evaluate(_ rules: SinkBulkSenderRules, keys: [String: DKIMPublicKey]) -> (SinkReason, SinkReplyTemplate)? {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return message.withUnsafeBytes { m -> (SinkReason, SinkReplyTemplate)? in
            let results = verifier.verify(message: m, now: Int64(ts.tv_sec)) { d, s in keys["\(s)._domainkey.\(d)"] }
            let passing = results.filter { $0.status == .pass }
            let fromDomain = DKIMMessageHeaders.fromDomain(m) ?? ""
            if let reply = rules.requireDKIM, passing.isEmpty {
                return (.unauthenticated, Self.fill(reply, fromDomain))
            }
            if let reply = rules.requireDMARCAlignment,
               !passing.contains(where: { DKIMMessageHeaders.aligned(fromDomain, $0.domain) }) {
                return (.dmarcAlignment, Self.fill(reply, fromDomain))
            }
            if let reply = rules.requireListUnsubscribe {
                let uris = DKIMMessageHeaders.firstValue(named: "List-Unsubscribe", in: m) ?? ""
                let post = DKIMMessageHeaders.firstValue(named: "List-Unsubscribe-Post", in: m) ?? ""
                let covered = passing.contains { $0.signedFields.contains("list-unsubscribe") && $0.signedFields.contains("list-unsubscribe-post") }
                if !uris.lowercased().contains("<https:") || post != "List-Unsubscribe=One-Click" || !covered {
                    return (.listUnsubscribe, Self.fill(reply, fromDomain))
                }
            }
            return nil
        }
    }

    static func fill(_ t: SinkReplyTemplate, _ fromDomain: String) -> SinkReplyTemplate {
        var t = t
        t.lines = t.lines.map { $0.replacingAll("{from-domain}", fromDomain) }
        return t
    }
}
