/// Counters and latencies of a run, kept on the generator's loop thread.
final class LoadStats {
    var connectionsOpened = 0
    var connectionErrors = 0
    /// Connections that completed a TLS handshake (`--starttls`), and those whose TLS failed.
    var tlsSessions = 0
    var tlsFailures = 0
    var lastTLSFailure = ""
    var lastConnectionError = ""
    var sent = 0
    var accepted = 0
    var deferred = 0
    var rejected = 0
    var sessionErrors = 0
    /// Sessions that ended in a timeout, a protocol error or a lost connection
    /// (their reconnects back off), and the last one's reason.
    var sessionFailures = 0
    var lastSessionFailure = ""
    var byCode: [Int: Int] = [:]
    /// Injection latency (send of MAIL FROM → reply after the final dot), microseconds.
    var latenciesMicros: [UInt32] = []
    var acceptedIDs: [String] = []
    var recordIDs = false

    init(expected: Int) { latenciesMicros.reserveCapacity(min(expected, 10_000_000)) }

    func percentile(_ p: Double, sorted: [UInt32]) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
        return Double(sorted[rank]) / 1000
    }
}
