#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock seconds since 1970, UTC (accounting timestamps). Calendar time
/// for records only: anything that measures an interval uses the loop's `now`.
@inlinable
package func wallClockSeconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec)
}

/// Wall-clock milliseconds since 1970, UTC (spool envelopes' arrival time).
@inlinable
package func wallClockMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
