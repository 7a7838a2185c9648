/// xtext (RFC 3461 §4): "+HH" hex escapes for ENVID and ORCPT values.
public enum XText {
    /// Decodes xtext; nil when a "+" escape is malformed or a byte is outside 33...126.
    public static func decode(_ bytes: some Collection<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var it = bytes.makeIterator()
        while let b = it.next() {
            guard b >= 33, b <= 126, b != UInt8(ascii: "=") else { return nil }
            if b == UInt8(ascii: "+") {
                guard let h = it.next().flatMap(hex), let l = it.next().flatMap(hex) else { return nil }
                out.append(h << 4 | l)
            } else {
                out.append(b)
            }
        }
        return out
    }

    /// Encodes bytes as xtext ("+" , "=" and bytes outside 33...126 escaped).
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        let digits = Array("0123456789ABCDEF".utf8)
        for b in bytes {
            if b < 33 || b > 126 || b == UInt8(ascii: "+") || b == UInt8(ascii: "=") {
                out.append(UInt8(ascii: "+")); out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)])
            } else { out.append(b) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil   // RFC 3461: uppercase hex only
        }
    }
}
