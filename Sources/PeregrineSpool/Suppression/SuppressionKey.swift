/// Why an address or domain is on the suppression list. Three bits of a
/// table slot hold it (see `SuppressionTable`), so there are at most seven.
package enum SuppressionReason: UInt8, Sendable, CaseIterable {
    /// Added by the operator (`ctl suppress add`, `import`, the API).
    case manual = 1
    /// A hard bounce: a `b` or `rb` record of category bad-mailbox, inactive-mailbox or bad-domain.
    case bounce = 2
    /// A complaint: an `f` record (ARF feedback-loop report).
    case complaint = 3

    /// The word the reply, the accounting record and the API use.
    package var name: String {
        switch self {
        case .manual: return "operator"
        case .bounce: return "hard-bounce"
        case .complaint: return "complaint"
        }
    }

    package init?(name: String) {
        guard let r = Self.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = r
    }
}

/// The normalised text of a suppression entry and its 64-bit digest.
///
/// Normal form: surrounding blanks and one pair of angle brackets removed,
/// every ASCII letter lower-cased (the local part too: RFC 5321 lets a
/// receiver treat it case-sensitively, but no mailbox provider does, and a
/// bounced `John@x` must also stop `john@x`; dots and `+tags` are left alone,
/// they are provider-specific), one trailing dot of the domain removed.
/// An address is `local@domain`; a whole domain is written `@domain` (a
/// domain given without `@` is read as one), so the two never share a text.
/// Only the exact domain matches: `@example.com` does not cover `a.example.com`.
package enum SuppressionKey {
    /// The longest entry text (RFC 5321's path limit is 256; this leaves room).
    package static let maxLength = 320

    /// The normal form of `text`, or nil when it is no address or domain
    /// (empty local part or domain, control bytes, blanks inside, too long).
    package static func normalise(_ text: String) -> [UInt8]? {
        var bytes = Array(text.utf8)
        while let f = bytes.first, f == 0x20 || f == 0x09 { bytes.removeFirst() }
        while let l = bytes.last, l == 0x20 || l == 0x09 || l == 0x0d || l == 0x0a { bytes.removeLast() }
        if bytes.first == UInt8(ascii: "<") && bytes.last == UInt8(ascii: ">") && bytes.count >= 2 {
            bytes = Array(bytes[1..<(bytes.count - 1)])
        }
        if !bytes.contains(UInt8(ascii: "@")) { bytes.insert(UInt8(ascii: "@"), at: 0) }
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        guard let at = bytes.lastIndex(of: UInt8(ascii: "@")), at + 1 < bytes.count,
              bytes.count <= maxLength else { return nil }
        for i in bytes.indices {
            let b = bytes[i]
            if b <= 0x20 || b == 0x7f || b == UInt8(ascii: "<") || b == UInt8(ascii: ">") { return nil }
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { bytes[i] = b | 0x20 }
        }
        // The domain: letters, digits, '-', '.', or an address literal [..]; no empty label.
        let domain = bytes[(at + 1)...]
        if domain.first != UInt8(ascii: "[") {
            guard domain.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e || $0 >= 0x80 }),
                  domain.first != 0x2e, !domain.elementsEqual([0x2e]),
                  !zip(domain, domain.dropFirst()).contains(where: { $0 == 0x2e && $1 == 0x2e }) else { return nil }
        }
        return bytes
    }

    /// Whether a normal form names a whole domain (`@domain`).
    package static func isDomain(_ normalised: some Collection<UInt8>) -> Bool { normalised.first == UInt8(ascii: "@") }

    /// The digest of a normalised text: 64 bits of a multiply-mix hash (wyhash's
    /// folding of a 128-bit product). Never stored: the log keeps the text and
    /// the digests are computed again at load, so the function may change.
    @inline(__always)
    package static func digest(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        let p0: UInt64 = 0xa076_1d64_78bd_642f, p1: UInt64 = 0xe703_7ed1_a0b4_28db
        let p2: UInt64 = 0x8ebc_6af0_9c88_c6e3, p3: UInt64 = 0x5899_65cc_7537_4cc3
        let n = bytes.count
        var h = mix(UInt64(n) ^ p0, p1)
        var i = 0
        while i + 8 <= n {
            let w = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            h = mix(w ^ p1, h ^ p2)
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            tail |= UInt64(bytes[i]) << shift
            shift += 8
            i += 1
        }
        h = mix(tail ^ p3, h ^ p0 ^ UInt64(n))
        return mix(h ^ p2, p3)
    }

    @inline(__always)
    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let r = a.multipliedFullWidth(by: b)
        return r.high ^ r.low
    }

    /// The digests a recipient is checked against: the address's and its
    /// domain's (`@domain`), computed from the recipient as given (it is
    /// lower-cased into a stack buffer: no allocation). Nil when `address`
    /// has no `@domain` or is longer than `maxLength`.
    @inline(__always)
    package static func recipientDigests(_ address: UnsafeRawBufferPointer) -> (address: UInt64, domain: UInt64)? {
        var start = 0, end = address.count
        if end >= 2 && address[0] == UInt8(ascii: "<") && address[end - 1] == UInt8(ascii: ">") { start = 1; end -= 1 }
        if end > start && address[end - 1] == UInt8(ascii: ".") { end -= 1 }
        let n = end - start
        guard n > 0, n <= maxLength else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: n, alignment: 8) { buffer -> (UInt64, UInt64)? in
            var at = -1
            for i in 0..<n {
                var b = address[start + i]
                if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b |= 0x20 }
                if b == UInt8(ascii: "@") { at = i }
                buffer[i] = b
            }
            guard at >= 0, at + 1 < n else { return nil }
            let all = UnsafeRawBufferPointer(buffer)
            let domain = UnsafeRawBufferPointer(rebasing: all[at..<n])
            return (at > 0 ? digest(all) : digest(domain), digest(domain))
        }
    }
}
