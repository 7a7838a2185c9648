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

/// Minimal base64 (RFC 4648) for AUTH.
public enum Base64 {
    public static func decode(_ bytes: some Collection<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0, padding = 0, count = 0
        for b in bytes {
            let v: UInt32
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(b - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(b - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(b - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): padding += 1; count += 1; continue
            default: return nil
            }
            if padding > 0 { return nil }
            count += 1
            acc = acc << 6 | v; bits += 6
            if bits >= 8 { bits -= 8; out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits))) }
        }
        guard count % 4 == 0, padding <= 2 else { return nil }
        return out
    }

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var acc: UInt32 = 0, bits = 0
        for b in bytes {
            acc = acc << 8 | UInt32(b); bits += 8
            while bits >= 6 { bits -= 6; out.append(table[Int((acc >> UInt32(bits)) & 63)]) }
        }
        if bits > 0 { out.append(table[Int((acc << UInt32(6 - bits)) & 63)]) }
        while out.count % 4 != 0 { out.append(UInt8(ascii: "=")) }
        return String(decoding: out, as: UTF8.self)
    }
}
