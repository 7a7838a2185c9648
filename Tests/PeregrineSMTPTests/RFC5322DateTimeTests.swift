import Testing
import PeregrineSMTP

/// Header dates against Python's `time.gmtime` (figures computed there,
/// 2026-12-05): the epoch, a leap day, before the epoch, a century year.
@Suite struct RFC5322DateTimeTests {
    @Test(arguments: [
        (Int64(0), "Thu, 1 Jan 1970 00:00:00 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_796_485_823, "Sat, 5 Dec 2026 15:50:23 +0000"),
        (-1, "Wed, 31 Dec 1969 23:59:59 +0000"),
        (4_102_444_800, "Fri, 1 Jan 2100 00:00:00 +0000"),
    ])
    func formatsAsGMTimeDoes(_ seconds: Int64, _ expected: String) {
        #expect(RFC5322DateTime.format(seconds) == expected)
    }
}
