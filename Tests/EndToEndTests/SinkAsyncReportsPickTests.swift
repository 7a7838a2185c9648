import Testing
@testable import PeregrineSink

/// Which accepted messages the sink bounces or complains about: a run's
/// counts must be exact for isp-mix to match them against `rb`/`f` records.
@Suite struct SinkAsyncReportsPickTests {
    /// The sink picks every 100/P-th accepted message, fractions included: exactly floor(N·P/100) of N.
    @Test func sinkPicksExactlyTheShareAsked() {
        for (percent, n, expected) in [(0.1, 5000, 5), (2.0, 200, 4), (1.0, 200, 2), (0.3, 1000, 3), (100.0, 7, 7), (0.0, 100, 0)] {
            let picked = (1...UInt64(n)).filter { SinkAsyncReports.picked($0, percent: percent) }.count
            #expect(picked == expected, "\(percent)% of \(n)")
        }
    }
}
