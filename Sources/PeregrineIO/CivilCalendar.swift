/// Days since 1970-01-01 ↔ proleptic Gregorian dates, in pure integer
/// arithmetic (Howard Hinnant's civil calendar algorithms): no libc time-zone
/// state, no Foundation. Accounting timestamps and message header dates.
package enum CivilCalendar {
    /// (year, month 1...12, day 1...31) of day `days` since the epoch.
    @inlinable
    package static func date(fromDays z0: Int64) -> (year: Int64, month: Int64, day: Int64) {
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

    /// Days since the epoch of a date.
    @inlinable
    package static func days(fromYear y0: Int64, month m: Int64, day d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// 0 Sunday … 6 Saturday (1970-01-01 was a Thursday).
    @inlinable
    package static func weekday(fromDays days: Int64) -> Int {
        Int(((days % 7) + 11) % 7)
    }

    /// Division rounding toward minus infinity (times before 1970).
    @inlinable
    package static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}
