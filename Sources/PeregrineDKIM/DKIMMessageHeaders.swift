/// Header lookups DKIM users need besides signing: the From domain (for
/// alignment) and a field's unfolded value.
public enum DKIMMessageHeaders {
    /// The unfolded value of the first field named `name` (ASCII case-insensitive), trimmed.
    public static func firstValue(named name: String, in message: UnsafeRawBufferPointer) -> String? {
        var fields = DKIMHeaderFields()
        fields.parse(message)
        let wanted = Array(name.utf8)
        guard let f = fields.fields.first(where: { DKIMHeaderFields.name($0, in: message, equals: wanted) }) else { return nil }
        let bytes = UnsafeRawBufferPointer(rebasing: message[f.value]).filter { $0 != 13 && $0 != 10 }
        return String(decoding: bytes, as: UTF8.self).trimmingFWS()
    }

    /// The domain of the (first) From address, lower-cased: after the last `@`
    /// of the angle-bracketed address, or of the bare address.
    public static func fromDomain(_ message: UnsafeRawBufferPointer) -> String? {
        guard let value = firstValue(named: "From", in: message) else { return nil }
        let v = Array(value.utf8)
        var start = 0, end = v.count
        if let open = v.firstIndex(of: UInt8(ascii: "<")), let close = v[open...].firstIndex(of: UInt8(ascii: ">")) {
            start = open + 1
            end = close
        }
        guard let at = v[start..<end].lastIndex(of: UInt8(ascii: "@")) else { return nil }
        var domain: [UInt8] = []
        for c in v[(at + 1)..<end] {
            if c == 32 || c == 9 || c == UInt8(ascii: ",") || c == UInt8(ascii: ")") || c == UInt8(ascii: ">") || c == UInt8(ascii: ";") { break }
            domain.append(DKIMHeaderFields.lower(c))
        }
        while domain.last == UInt8(ascii: ".") { domain.removeLast() }
        return domain.isEmpty ? nil : String(decoding: domain, as: UTF8.self)
    }

    /// The same from fields already scanned (`fields` describes `message`):
    /// no scan and, for a domain of up to 15 bytes, no allocation.
    public static func fromDomain(_ message: UnsafeRawBufferPointer, fields: DKIMHeaderFields) -> String? {
        guard let f = fields.fields.first(where: { DKIMHeaderFields.name($0, in: message, equals: "from") }) else { return nil }
        // As above on the unfolded value: CR and LF are skipped where they matter, and
        // the first '<', the first '>' after it and the last '@' are found the same way.
        var start = f.value.lowerBound, end = f.value.upperBound
        var open = -1
        for i in start..<end where message[i] == UInt8(ascii: "<") { open = i; break }
        if open >= 0 {
            var close = -1
            for i in open..<end where message[i] == UInt8(ascii: ">") { close = i; break }
            if close >= 0 { start = open + 1; end = close }
        }
        var at = -1
        var i = end
        while i > start { i -= 1; if message[i] == UInt8(ascii: "@") { at = i; break } }
        guard at >= 0 else { return nil }
        var domainEnd = at + 1
        var k = at + 1
        while k < end {
            let c = message[k]
            if c == 13 || c == 10 { k += 1; continue }
            if c == 32 || c == 9 || c == UInt8(ascii: ",") || c == UInt8(ascii: ")") || c == UInt8(ascii: ">") || c == UInt8(ascii: ";") { break }
            k += 1
            domainEnd = k
        }
        // Trailing dots go (domainEnd is past a kept byte, never a CR or LF).
        while domainEnd > at + 1 && message[domainEnd - 1] == UInt8(ascii: ".") { domainEnd -= 1 }
        guard domainEnd > at + 1 else { return nil }
        let raw = UnsafeRawBufferPointer(rebasing: message[(at + 1)..<domainEnd])
        if !raw.contains(where: { $0 == 13 || $0 == 10 || ($0 >= 65 && $0 <= 90) }) {
            return String(decoding: raw, as: UTF8.self)
        }
        var lowered: [UInt8] = []
        for c in raw where c != 13 && c != 10 { lowered.append(DKIMHeaderFields.lower(c)) }
        return String(decoding: lowered, as: UTF8.self)
    }

    /// DMARC relaxed alignment without the public-suffix list: the same
    /// domain, or `fromDomain` is a subdomain of `signingDomain`.
    public static func aligned(_ fromDomain: String, _ signingDomain: String) -> Bool {
        let d = signingDomain.lowercased()
        return fromDomain == d || fromDomain.hasSuffix("." + d)
    }
}
