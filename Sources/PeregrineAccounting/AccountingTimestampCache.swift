/// Timestamp text for records written one after another: the date part
/// (`YYYY-MM-DD `) is computed once per UTC day and the whole text once per
/// second, so a busy writer formats most timestamps with one copy.
struct AccountingTimestampCache {
    private var second: Int64 = .min
    private var day: Int64 = .min
    /// `YYYY-MM-DD HH:MM:SS+0000` of `second`; the first 11 bytes are `day`'s date.
    private var text: [UInt8] = Array(repeating: 0, count: 24)

    mutating func append(_ seconds: Int64, to out: inout [UInt8]) {
        if seconds != second { fill(seconds) }
        out.append(contentsOf: text)
    }

    private mutating func fill(_ seconds: Int64) {
        let days = AccountingTimestamp.floorDiv(seconds, 86_400)
        if days != day {
            var date: [UInt8] = []
            date.reserveCapacity(24)
            AccountingTimestamp.append(days * 86_400, to: &date)
            text = date
            day = days
        }
        let secs = seconds - days * 86_400
        text.withUnsafeMutableBufferPointer { p in
            AccountingTimestampCache.twoDigits(secs / 3600, p, 11)
            AccountingTimestampCache.twoDigits(secs / 60 % 60, p, 14)
            AccountingTimestampCache.twoDigits(secs % 60, p, 17)
        }
        second = seconds
    }

    @inline(__always)
    private static func twoDigits(_ v: Int64, _ p: UnsafeMutableBufferPointer<UInt8>, _ at: Int) {
        p[at] = UInt8(48 + v / 10)
        p[at + 1] = UInt8(48 + v % 10)
    }
}
