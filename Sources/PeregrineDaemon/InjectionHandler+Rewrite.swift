import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineEngine

/// `rewrite-list` of a `<source>` (RewriteList.swift), applied in
/// `finishMessage` before the message is spooled and before DKIM signs it.
struct InjectionRewrite {
    let list: RewriteList?

    /// The envelope sender after `mail-from` rules (the null sender has no address to rewrite).
    func sender(_ reversePath: String) -> String {
        guard let list, !reversePath.isEmpty else { return reversePath }
        return list.rewrite(reversePath, .mailFrom)
    }

    /// An envelope recipient after `rcpt-to` rules.
    func recipient(_ forwardPath: String) -> String {
        list?.rewrite(forwardPath, .rcptTo) ?? forwardPath
    }

    /// For `header-from` rules: the From field to drop and the line that
    /// replaces it (display name and comments kept, only the address
    /// changed), or nil when no rule matches.
    func fromHeader(_ headers: HeaderSection, in bytes: UnsafeRawBufferPointer) -> (drop: Range<Int>, line: [UInt8])? {
        guard let list, list.has(.headerFrom), let field = headers.first(named: "From", in: bytes) else { return nil }
        let value = HeaderSection.string(field.value, in: bytes)
        let address = MIMEEntity.address(value)
        let rewritten = list.rewrite(address, .headerFrom)
        guard rewritten != address, let r = value.range(of: address) else { return nil }
        return (field.range, Array("From: \(value.replacingCharacters(in: r, with: rewritten))\r\n".utf8))
    }
}

extension InjectionHandler {
    /// The relay check of a client without relay rights, on the address the
    /// message will be delivered to: `rcpt-to` rewriting first (the same
    /// rewrite `finishMessage` applies), then `relay-domain` on its domain. A
    /// rewrite can thus neither carry a relay-domain recipient out to a
    /// domain the client may not relay to, nor is a recipient refused whom
    /// the operator's rewrite sends to a relay domain. Nil: allowed.
    func relayRefusal(_ forwardPath: String) -> SMTPReply? {
        let config = worker.policies.config
        let rewrite = InjectionRewrite(list: source.rewriteList.flatMap { config.rewriteLists[$0] })
        let delivered = rewrite.recipient(forwardPath)
        if let at = delivered.lastIndex(of: "@"), delivered.index(after: at) < delivered.endIndex,
           config.isRelayDomain(delivered[delivered.index(after: at)...]) {
            return nil
        }
        let detail = delivered == forwardPath ? "" : " (\(forwardPath) is rewritten to \(delivered))"
        return SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1), "relaying denied for \(peer.ip)\(detail)")
    }
}
