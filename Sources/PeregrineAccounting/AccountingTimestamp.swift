/// PowerMTA-style accounting timestamps: `2026-11-29 08:41:36+0000` (always UTC).
/// Pure arithmetic (no Foundation, no locale, no allocation besides the bytes).
public enum AccountingTimestamp {
    /// Appends the formatted time to `out`.
    public static func append(_ seconds: Int64, to out: inout [UInt8]) {
        let days = floorDiv(seconds, 86_400)
        let secs = seconds - days * 86_400
        let (y, m, d) = civil(fromDays: days)
        appendDigits(y, 4, &out); out.append(UInt8(ascii: "-"))
        appendDigits(m, 2, &out); out.append(UInt8(ascii: "-"))
        appendDigits(d, 2, &out); out.append(UInt8(ascii: " "))
        appendDigits(secs / 3600, 2, &out); out.append(UInt8(ascii: ":"))
        appendDigits(secs / 60 % 60, 2, &out); out.append(UInt8(ascii: ":"))
        appendDigits(secs % 60, 2, &out)
        out.append(contentsOf: "+0000".utf8)
    }

    public static func format(_ seconds: Int64) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        append(seconds, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `YYYYMMDD-HHMMSS`, for rotated file names.
    public static func compact(_ seconds: Int64) -> String {
        let days = floorDiv(seconds, 86_400)
        let secs = seconds - days * 86_400
        let (y, m, d) = civil(fromDays: days)
        var out: [UInt8] = []
        appendDigits(y, 4, &out); appendDigits(m, 2, &out); appendDigits(d, 2, &out)
        out.append(UInt8(ascii: "-"))
        appendDigits(secs / 3600, 2, &out); appendDigits(secs / 60 % 60, 2, &out); appendDigits(secs % 60, 2, &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses `YYYY-MM-DD HH:MM:SS+HHMM` (or `-HHMM`, or without zone = UTC). Nil when malformed.
    public static func parse(_ text: some StringProtocol) -> Int64? {
        let b = Array(text.utf8)
        guard b.count >= 19 else { return nil }
        func num(_ from: Int, _ len: Int) -> Int64? {
            var v: Int64 = 0
            for i in from..<(from + len) {
                let c = b[i]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            return v
        }
        guard b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              b[10] == UInt8(ascii: " ") || b[10] == UInt8(ascii: "T"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2),
              let h = num(11, 2), let mi = num(14, 2), let s = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
        var offset: Int64 = 0
        if b.count > 19 {
            guard b.count == 24, b[19] == UInt8(ascii: "+") || b[19] == UInt8(ascii: "-"),
                  let oh = num(20, 2), let om = num(22, 2) else { return nil }
            offset = (oh * 3600 + om * 60) * (b[19] == UInt8(ascii: "-") ? -1 : 1)
        }
        return days(fromCivil: y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset
    }

    // Howard Hinnant's civil calendar algorithms.
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    @inline(__always)
    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    @inline(__always)
    static func appendDigits(_ value: Int64, _ width: Int, _ out: inout [UInt8]) {
        var v = value < 0 ? 0 : value
        var tmp: (UInt8, UInt8, UInt8, UInt8) = (48, 48, 48, 48)
        withUnsafeMutableBytes(of: &tmp) { p in
            var i = width - 1
            while i >= 0 {
                p[i] = UInt8(48 + v % 10)
                v /= 10
                i -= 1
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[0..<width]))
        }
    }
}
