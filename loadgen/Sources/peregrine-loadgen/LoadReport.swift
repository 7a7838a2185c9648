import Foundation
import PeregrineIO

/// The JSON summary and the accepted-id list.
enum LoadReport {
    static func write<L: EventLoop>(generator g: LoadGenerator<L>, options: LoadgenOptions) -> Int32 {
        let s = g.stats
        let sorted = s.latenciesMicros.sorted()
        let elapsed = max(g.elapsedSeconds, 1e-9)
        var summary: [String: Any] = [
            "target": options.target.description,
            "backend": options.backend.rawValue,
            "connections": options.connections,
            "messagesPerConnection": options.messagesPerConnection,
            "pipelining": options.pipelining,
            "recipientsPerMessage": options.recipientsPerMessage,
            "elapsedSeconds": elapsed,
            "sent": s.sent,
            "accepted": s.accepted,
            "deferred": s.deferred,
            "rejected": s.rejected,
            "connectionsOpened": s.connectionsOpened,
            "connectionErrors": s.connectionErrors,
            "acceptedPerSecond": Double(s.accepted) / elapsed,
            "replyCodes": Dictionary(uniqueKeysWithValues: s.byCode.map { (String($0.key), $0.value) }),
            "latencyMs": [
                "p50": s.percentile(50, sorted: sorted), "p90": s.percentile(90, sorted: sorted),
                "p99": s.percentile(99, sorted: sorted), "max": Double(sorted.last ?? 0) / 1000,
            ],
        ]
        if let r = options.rate { summary["rateTarget"] = r }
        if options.startTLS {
            summary["starttls"] = true
            summary["tlsSessions"] = s.tlsSessions
            summary["tlsFailures"] = s.tlsFailures
            if !s.lastTLSFailure.isEmpty { summary["lastTLSFailure"] = s.lastTLSFailure }
        }
        if !s.lastConnectionError.isEmpty { summary["lastConnectionError"] = s.lastConnectionError }
        summary["sessionFailures"] = s.sessionFailures
        if !s.lastSessionFailure.isEmpty { summary["lastSessionFailure"] = s.lastSessionFailure }
        if let path = options.idsPath {
            let text = s.acceptedIDs.joined(separator: "\n") + (s.acceptedIDs.isEmpty ? "" : "\n")
            do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
                fputs("peregrine-loadgen: cannot write --ids \(path): \(error)\n", stderr)
                return 1
            }
        }
        do {
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            if let path = options.jsonPath, path != "-" {
                try data.write(to: URL(fileURLWithPath: path))
            } else if options.jsonPath == "-" {
                // stdio, not FileHandle.write, which traps on EPIPE.
                fputs(String(decoding: data, as: UTF8.self) + "\n", stdout)
            } else {
                print("sent \(s.sent) accepted \(s.accepted) deferred \(s.deferred) rejected \(s.rejected) in "
                      + "\(format1(elapsed)) s: \(Int(Double(s.accepted) / elapsed))/s, p50 \(s.percentile(50, sorted: sorted)) ms, "
                      + "p99 \(s.percentile(99, sorted: sorted)) ms")
            }
        } catch {
            fputs("peregrine-loadgen: cannot write the summary: \(error)\n", stderr)
            return 1
        }
        if s.connectionsOpened == 0 {
            fputs("peregrine-loadgen: could not connect to \(options.target): \(s.lastConnectionError)\n", stderr)
            return 1
        }
        return 0
    }
}
