import PeregrineIO

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

    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let d = CivilCalendar.date(fromDays: days)
        return (d.year, d.month, d.day)
    }

    static func days(fromCivil y: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        CivilCalendar.days(fromYear: y, month: m, day: d)
    }

    @inline(__always)
    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { CivilCalendar.floorDiv(a, b) }

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
