import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport

/// Two `peregrine run` nodes on loopback addresses of their own, sharing one
/// real redis-server (cluster-redis) and one sink: a 4.7.28 deferral that
/// puts a queue into backoff on one node puts the same queue into backoff on
/// the other, which never met the deferral itself. Scenario 102.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonClusterTests {

    static func nodeConfig(_ dir: TestDirectory, name: String, listen: String, source: String,
                           redis: String, mx: String, port: UInt16) -> String {
        clusterNodeConfig(dir, name: name, listen: listen, source: source, sourceHost: "vmta1.test", redis: redis,
                          nodeCount: 2, records: "r,d,b,t,tq") + """
        <smtp-pattern-list gmail>
            reply /4\\.7\\.28/ mode=backoff
        </smtp-pattern-list>
        <domain gmail.test>
            route [\(mx)]:\(port)
            max-smtp-out 2
            smtp-pattern-list gmail
            backoff-max-msg-rate 1/m
            backoff-to-normal-after 60s
            retry-after 1s
            backoff-retry-after 1s
        </domain>

        """
    }

    @Test(arguments: BackendKind.testable)
    func backoffOnOneNodePutsTheOtherInBackoff(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("cluster-backoff-\(kind.rawValue)")
        let redis = RedisServerProcess(ip: E2E.ip(102, kind, host: 7))
        try redis.start()
        defer { redis.kill() }
        let mx = E2E.ip(102, kind, host: 1)
        let text = "421-4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address."
        let sink = try startSink(dir, serviceIP: E2E.ip(102, kind, host: 9), sinkProfile("gmail", domains: "gmail.test", mx: [mx], """
                max-msg-rate 20/s mail burst 10 penalty "\(text)"
                penalty-box 60s mail "\(text)"
            """))
        defer { sink.terminate() }
        let (_, port) = try sink.address("gmail")
        // Each node its own source IP, as real nodes have: the sink penalises A's only.
        let a = try DaemonProcess(configPath: dir.write("a.conf", Self.nodeConfig(dir, name: "a", listen: E2E.ip(102, kind, host: 2),
                                                                                   source: "127.0.0.10", redis: redis.ip, mx: mx, port: port)),
                                  backend: kind, threads: 2, logPath: dir.file("a.log"))
        defer { a.terminate() }
        let b = try DaemonProcess(configPath: dir.write("b.conf", Self.nodeConfig(dir, name: "b", listen: E2E.ip(102, kind, host: 3),
                                                                                   source: "127.0.0.12", redis: redis.ip, mx: mx, port: port)),
                                  backend: kind, threads: 2, logPath: dir.file("b.log"))
        defer { b.terminate() }
        let queue = queueName("gmail.test")
        func mode(_ d: DaemonProcess) -> String? { (try? d.queues())?[queue]?["mode"] as? String }
        // Both nodes reach Redis (logged once each).
        #expect(E2E.waitUntil(30) { a.log.contains("shared limits in force") && b.log.contains("shared limits in force") },
                "a:\n\(a.log)\nb:\n\(b.log)")

        // B delivers normally first: its queue exists, in normal mode.
        let cb = try b.client()
        #expect(try cb.send(to: ["b1@gmail.test"], id: "b-1") == nil)
        cb.quit()
        #expect(E2E.waitUntil(30) { accounting(dir.file("acct-b.csv")).of(.delivered).count == 1 })
        #expect(mode(b) == "normal")

        // A's source IP is put in the sink's penalty box; A's first attempt meets 4.7.28.
        let trip = try tripSinkRate(mx, port, from: "127.0.0.10", pairs: 16)
        #expect(trip?.contains("4.7.28") == true, "\(trip ?? "no refusal")")
        let ca = try a.client()
        #expect(try ca.send(to: ["a1@gmail.test"], id: "a-1") == nil)
        ca.quit()

        var aAt: Date?, bAt: Date?
        E2E.waitUntil(60, every: 0.05) {
            if aAt == nil, mode(a) == "backoff" { aAt = Date() }
            if bAt == nil, mode(b) == "backoff" { bAt = Date() }
            return aAt != nil && bAt != nil
        }
        #expect(aAt != nil, "a never entered backoff:\n\(a.log)")
        #expect(bAt != nil, "b never followed a into backoff:\n\(b.log)")
        if let aAt, let bAt {
            // A figure, not a threshold: each sample is a `ctl` run, so this is coarse.
            print("DaemonClusterTests: backoff seen on b \(Int(bAt.timeIntervalSince(aAt) * 1000)) ms after a on \(kind)")
        }
        // A's deferral is accounted (the writer may lag the mode change: wait, bounded);
        // B followed the cluster, it never met the deferral itself.
        func deferrals(_ name: String) -> Int {
            accounting(dir.file("acct-\(name).csv")).of(.transient).filter { $0.dsnDiag.contains("4.7.28") }.count
        }
        #expect(E2E.waitUntil(30) { deferrals("a") > 0 })
        #expect(deferrals("b") == 0)
    }
}
