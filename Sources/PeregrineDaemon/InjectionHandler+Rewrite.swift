import Foundation
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
