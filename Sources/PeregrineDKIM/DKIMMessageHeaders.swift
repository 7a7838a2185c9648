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

    /// DMARC relaxed alignment without the public-suffix list: the same
    /// domain, or `fromDomain` is a subdomain of `signingDomain`.
    public static func aligned(_ fromDomain: String, _ signingDomain: String) -> Bool {
        let d = signingDomain.lowercased()
        return fromDomain == d || fromDomain.hasSuffix("." + d)
    }
}
