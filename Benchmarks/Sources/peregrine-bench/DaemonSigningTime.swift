import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the daemon itself measured of DKIM signing in a run: the
/// `peregrine_dkim_signing_duration_seconds` histogram's sum and count from
/// its /metrics (wall time of the whole signing call on the loop thread, all
/// of a message's signatures). Read against `openssl speed` it isolates what
/// Peregrine's signing path adds to the raw signature (body hash, header
/// canonicalisation, field text) from the rest of the relay, which the
/// CPU-per-message difference between two runs cannot do when the runs move
/// at different rates.
struct DaemonSigningTime {
    var seconds: Double
    var messages: Int

    var microsecondsPerMessage: Double? { messages > 0 ? seconds / Double(messages) * 1e6 : nil }

    var json: [String: Any] {
        var d: [String: Any] = ["sumSeconds": seconds, "messages": messages]
        if let us = microsecondsPerMessage { d["microsecondsPerMessage"] = us }
        return d
    }

    static func read(ip: String, port: UInt16) -> DaemonSigningTime? {
        guard let text = BenchNet.getText(ip: ip, port: port, path: "/metrics") else { return nil }
        var sum: Double?, count: Int?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("peregrine_dkim_signing_duration_seconds_sum ") {
                sum = line.split(separator: " ").last.flatMap { Double($0) }
            } else if line.hasPrefix("peregrine_dkim_signing_duration_seconds_count ") {
                count = line.split(separator: " ").last.flatMap { Double($0) }.map { Int($0) }
            }
        }
        guard let sum, let count else { return nil }
        return DaemonSigningTime(seconds: sum, messages: count)
    }
}
