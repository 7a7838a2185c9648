/// Tenant scopes (issue 16): an entry that applies to one tenant's mail only.
///
/// A scoped entry's text is `tenant SP entry` (the tenant lower-cased, then
/// one space, then the entry's normal form). An entry's normal form never
/// holds a blank, so the first space always ends the tenant and a global
/// entry (no space) can never be read as a scoped one. The log, the table
/// and compaction treat the scoped text like any other: its digest is one
/// more slot, and a recipient of a tenant's mail is checked against four
/// digests (the address and its domain, scoped and global) instead of two.
extension SuppressionKey {
    /// The longest tenant name (the HTTP API's tag limit).
    package static let maxTenantLength = 128

    /// The scope form of a tenant name: printable ASCII without blanks,
    /// lower-cased; nil when `name` is not one.
    package static func normaliseTenant(_ name: String) -> [UInt8]? {
        var bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxTenantLength else { return nil }
        for i in bytes.indices {
            let b = bytes[i]
            guard b > 0x20 && b < 0x7f else { return nil }
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { bytes[i] = b | 0x20 }
        }
        return bytes
    }

    /// The stored text of `entry` (a normal form) in `tenant`'s scope, or `entry` itself when global.
    package static func scoped(_ entry: [UInt8], tenant: [UInt8]?) -> [UInt8] {
        guard let tenant else { return entry }
        return tenant + [0x20] + entry
    }

    /// Whether `text` is a stored entry as this node would write it: a normal
    /// form, or a tenant's normal form, a space and a normal form (a text
    /// from another cluster node is checked before it is applied).
    package static func isStoredForm(_ text: [UInt8]) -> Bool {
        guard let space = text.firstIndex(of: 0x20) else { return normalise(String(decoding: text, as: UTF8.self)) == text }
        let tenant = String(decoding: text[..<space], as: UTF8.self), entry = Array(text[(space + 1)...])
        return normaliseTenant(tenant) == Array(text[..<space]) && normalise(String(decoding: entry, as: UTF8.self)) == entry
    }

    /// A stored text split into its tenant (nil: global) and its entry.
    package static func split(_ text: some Collection<UInt8>) -> (tenant: String?, entry: String) {
        let bytes = Array(text)
        guard let space = bytes.firstIndex(of: 0x20) else { return (nil, String(decoding: bytes, as: UTF8.self)) }
        return (String(decoding: bytes[..<space], as: UTF8.self), String(decoding: bytes[(space + 1)...], as: UTF8.self))
    }

    /// The digests of a recipient in `tenant`'s scope (a `normaliseTenant`
    /// form): of `tenant SP address` and `tenant SP @domain`, lower-cased in a
    /// stack buffer as `recipientDigests` does. Nil as there.
    @inline(__always)
    package static func recipientDigests(_ address: UnsafeRawBufferPointer,
                                         tenant: UnsafeRawBufferPointer) -> (address: UInt64, domain: UInt64)? {
        var start = 0, end = address.count
        if end >= 2 && address[0] == UInt8(ascii: "<") && address[end - 1] == UInt8(ascii: ">") { start = 1; end -= 1 }
        if end > start && address[end - 1] == UInt8(ascii: ".") { end -= 1 }
        let n = end - start, t = tenant.count
        guard n > 0, n <= maxLength, t > 0, t <= maxTenantLength else { return nil }
        // [tenant SP address][tenant SP @domain]
        return withUnsafeTemporaryAllocation(byteCount: 2 * (t + 1 + n), alignment: 8) { buffer -> (UInt64, UInt64)? in
            for i in 0..<t { buffer[i] = tenant[i] }
            buffer[t] = 0x20
            var at = -1
            for i in 0..<n {
                var b = address[start + i]
                if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b |= 0x20 }
                if b == UInt8(ascii: "@") { at = i }
                buffer[t + 1 + i] = b
            }
            guard at >= 0, at + 1 < n else { return nil }
            let second = t + 1 + n
            for i in 0...t { buffer[second + i] = buffer[i] }
            let domainBytes = n - at
            for i in 0..<domainBytes { buffer[second + t + 1 + i] = buffer[t + 1 + at + i] }
            let all = UnsafeRawBufferPointer(buffer)
            let domain = digest(UnsafeRawBufferPointer(rebasing: all[second..<(second + t + 1 + domainBytes)]))
            return (at > 0 ? digest(UnsafeRawBufferPointer(rebasing: all[0..<(t + 1 + n)])) : domain, domain)
        }
    }
}
