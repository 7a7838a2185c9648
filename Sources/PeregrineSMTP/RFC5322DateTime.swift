import PeregrineIO

/// Message header dates (RFC 5322 §3.3): Received, Date, DSN fields.
public enum RFC5322DateTime {
    /// `seconds` since the epoch as UTC, e.g. "Sat, 5 Dec 2026 15:50:23 +0000".
    public static func format(_ seconds: Int64) -> String {
        let days = CivilCalendar.floorDiv(seconds, 86_400)
        let secs = seconds - days * 86_400
        let date = CivilCalendar.date(fromDays: days)
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(names[CivilCalendar.weekday(fromDays: days)]), \(date.day) \(months[Int(date.month) - 1]) \(date.year) "
            + "\(two(secs / 3600)):\(two(secs % 3600 / 60)):\(two(secs % 60)) +0000"
    }
}
