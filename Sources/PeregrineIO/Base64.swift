/// Base64 (RFC 4648 §4): the one codec behind SMTP AUTH, DKIM's `b=`/`bh=`/`p=`
/// tags and the stored password hashes. They differ only in how they read
/// padding and whitespace, which `DecodeRules` names.
public enum Base64 {
    @usableFromInline static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// How strictly `decode` reads its input.
    public enum DecodeRules: Sendable {
        /// RFC 4648 as SMTP AUTH sends it: padded to a multiple of four, nothing else.
        case strict
        /// Whitespace skipped and padding optional: DKIM tag values, which may be folded.
        case folded
        /// No padding at all, and "." read as "+": the PHC/passlib hash strings.
        case unpadded
    }

    /// Appends the encoding of `bytes` to `out` (no intermediate String: the DKIM
    /// signer writes `b=` straight into its header template).
    public static func encode(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8], padded: Bool = true) {
        var i = 0
        let n = bytes.count
        while i + 3 <= n {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(v >> 18 & 63)]); out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)]); out.append(alphabet[Int(v & 63)])
            i += 3
        }
        switch n - i {
        case 1:
            let v = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(v >> 18 & 63)]); out.append(alphabet[Int(v >> 12 & 63)])
            if padded { out.append(UInt8(ascii: "=")); out.append(UInt8(ascii: "=")) }
        case 2:
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(v >> 18 & 63)]); out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            if padded { out.append(UInt8(ascii: "=")) }
        default:
            break
        }
    }

    public static func encode(_ bytes: some Sequence<UInt8>, padded: Bool = true) -> String {
        let input = Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity((input.count + 2) / 3 * 4)
        input.withUnsafeBytes { encode($0, into: &out, padded: padded) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The decoded bytes, or nil for anything `rules` does not allow (a byte
    /// outside the alphabet, data after padding, more than two `=`).
    public static func decode(_ text: some Sequence<UInt8>, rules: DecodeRules = .strict) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.underestimatedCount * 3 / 4)
        var acc: UInt32 = 0, bits = 0, padding = 0, symbols = 0
        for c in text {
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: ".") where rules == .unpadded: v = 62
            case UInt8(ascii: "=") where rules != .unpadded: padding += 1; symbols += 1; continue
            case 9, 10, 13, 32:
                // (A `where` on a multi-pattern case guards only its last pattern.)
                if rules == .folded { continue }
                return nil
            default: return nil
            }
            if padding > 0 { return nil }
            symbols += 1
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        guard padding <= 2 else { return nil }
        if rules == .strict, symbols % 4 != 0 { return nil }
        return out
    }
}
