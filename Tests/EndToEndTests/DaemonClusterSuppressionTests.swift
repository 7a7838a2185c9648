import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport

/// The suppression list shared across the cluster (issue #21): `ctl
/// suppress add` on node A is published to Redis and applied by node B, whose
/// RCPT then answers 550 5.7.1; a remove on B lets the address through on A
/// again; a node that was down while an entry was added catches up when it
/// starts. Two `peregrine run` nodes, one redis-server. Scenario 107.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonClusterSuppressionTests {

    static func nodeConfig(_ dir: TestDirectory, name: String, ip: String, redis: String) -> String {
        """
        smtp-listener \(ip):2525
        http-mgmt-port \(ip):8125
        spool \(dir.file("spool-\(name)"))
        cluster-redis \(redis):6379
        cluster-node-name \(name)
        cluster-node-count 2
        <source 127.0.0.0/8>
            always-allow-relaying yes
        </source>
        <domain *>
            route [127.0.0.1]:9
            retry-after 1h
        </domain>

        """
    }

    /// The reply to RCPT TO:<address> in a fresh transaction (then RSET).
    static func rcpt(_ node: DaemonProcess, _ address: String) throws -> WireReply? {
        let c = try node.client()
        defer { c.quit() }
        guard try c.client.command("MAIL FROM:<news@senders.test>")?.code == 250 else { return nil }
        let reply = try c.client.command("RCPT TO:<\(address)>")
        _ = try c.client.command("RSET")
        return reply
    }

    static func suppressed(_ node: DaemonProcess, _ address: String) -> Bool {
        (try? node.ctl(["suppress", "check", address]))?["suppressed"] as? Bool == true
    }

    @Test(arguments: BackendKind.testable)
    func suppressionOnOneNodeIsRefusedOnTheOther(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("cluster-suppression-\(kind.rawValue)")
        let redis = RedisServerProcess(ip: E2E.ip(107, kind, host: 8))
        try redis.start()
        defer { redis.kill() }
        let configA = try dir.write("a.conf", Self.nodeConfig(dir, name: "a", ip: E2E.ip(107, kind, host: 1), redis: redis.ip))
        let configB = try dir.write("b.conf", Self.nodeConfig(dir, name: "b", ip: E2E.ip(107, kind, host: 2), redis: redis.ip))
        let a = try DaemonProcess(configPath: configA, backend: kind, threads: 2, logPath: dir.file("a.log"))
        defer { a.terminate() }
        var b = try DaemonProcess(configPath: configB, backend: kind, threads: 2, logPath: dir.file("b.log"))
        defer { b.terminate() }
        #expect(E2E.waitUntil(30) { a.log.contains("shared limits in force") && b.log.contains("shared limits in force") })

        // Not suppressed anywhere yet: B accepts the recipient.
        #expect(try Self.rcpt(b, "gone@isp.test")?.code == 250)
        _ = try a.ctl(["suppress", "add", "gone@isp.test"])
        #expect(E2E.waitUntil(30) { Self.suppressed(b, "gone@isp.test") }, "b never applied a's entry:\n\(b.log)")
        let refused = try Self.rcpt(b, "gone@isp.test")
        #expect(refused?.code == 550 && refused?.text.hasPrefix("5.7.1 <gone@isp.test>: recipient is suppressed (operator)") == true,
                "\(refused.map { "\($0)" } ?? "no reply")")

        // Removed on B: A lets it through again.
        _ = try b.ctl(["suppress", "remove", "gone@isp.test"])
        #expect(E2E.waitUntil(30) { !Self.suppressed(a, "gone@isp.test") }, "a never applied b's removal:\n\(a.log)")
        #expect(try Self.rcpt(a, "gone@isp.test")?.code == 250)

        // B down while A adds another entry; B catches up when it starts again.
        b.terminate()
        _ = try a.ctl(["suppress", "add", "later@isp.test"])
        b = try DaemonProcess(configPath: configB, backend: kind, threads: 2, logPath: dir.file("b.log"))
        #expect(E2E.waitUntil(30) { Self.suppressed(b, "later@isp.test") }, "b did not catch up:\n\(b.log)")
        // The stream's order holds on the replay: the earlier entry stays removed.
        #expect(!Self.suppressed(b, "gone@isp.test"))
        #expect(try Self.rcpt(b, "later@isp.test")?.code == 550)
    }
}
