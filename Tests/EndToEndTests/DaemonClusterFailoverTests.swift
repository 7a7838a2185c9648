#if canImport(Glibc)
import Glibc
#endif
import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport

/// The cluster's failure behaviour (issue #21, CLUSTER.md), with real
/// `peregrine run` nodes, a real redis-server and the gated ClusterReceiver:
/// a network partition between one node and Redis (a TCP proxy per node
/// that the test cuts) is Redis down for that node only; Redis coming back
/// (restarted, empty) resumes shared mode without a burst past the cluster
/// cap, each node logging once each way; a node killed with SIGKILL gives
/// its leases back within the lease TTL and the other takes its share.
/// Scenarios 104 (nodes, receiver, Redis), 106 (the proxies) and 105.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonClusterFailoverTests {

    static func nodeConfig(_ dir: TestDirectory, name: String, ip: String, redis: String, nodeCount: Int,
                           domain: String, route: String, cap: Int, perNode: Int) -> String {
        clusterNodeConfig(dir, name: name, listen: ip, source: ip, sourceHost: "\(name).test", redis: redis,
                          nodeCount: nodeCount, leaseTTL: "2s") + """
        <domain \(domain)>
            route \(route)
            max-smtp-out \(perNode)
            cluster-max-smtp-out \(cap)
            retry-after 1s
        </domain>

        """
    }

    static func inject(_ node: DaemonProcess, _ domain: String, count: Int, tag: String) throws {
        let c = try node.client()
        for m in 0..<count {
            let refusal = try c.send(to: ["u\(m)@\(domain)"], id: "\(tag)-\(m)")
            #expect(refusal == nil, "\(tag) #\(m) refused: \(refusal ?? "")")
        }
        c.quit()
    }

    static func cluster(_ node: DaemonProcess) -> [String: Any] { (try? node.ctl(["show", "cluster"])) ?? [:] }
    static func mode(_ node: DaemonProcess) -> String? { cluster(node)["mode"] as? String }
    static func lines(_ node: DaemonProcess, _ text: String) -> Int { node.log.components(separatedBy: text).count - 1 }

    /// Cap 6 across three nodes (fallback share 2). n1 partitioned from Redis
    /// alone: fallback on n1 only. Then every node loses Redis (its proxy cut:
    /// refused connections, as a dead host gives), Redis is killed and
    /// restarted empty, and n3 alone reaches it first: it must not be granted
    /// the connections n1 and n2 still hold (the burst), and after the return
    /// no connection opened takes the receiver past 6.
    @Test(arguments: BackendKind.testable)
    func partitionAndRedisReturnKeepTheCap(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let begun = Date()
        let dir = try TestDirectory("cluster-failover-\(kind.rawValue)")
        let redis = RedisServerProcess(ip: E2E.ip(104, kind, host: 8))
        try redis.start()
        defer { redis.kill() }
        let rx = try ClusterReceiver(dir, listeners: ["capped": E2E.ip(104, kind, host: 1)], gated: ["capped"])
        defer { rx.terminate() }
        let route = "[\(rx.addresses["capped"]?.ip ?? "")]:\(rx.addresses["capped"]?.port ?? 0)"
        let names = ["n1", "n2", "n3"]
        var proxies: [RedisPartitionProxy] = []
        defer { for p in proxies { p.terminate() } }
        var nodes: [DaemonProcess] = []
        defer { for n in nodes { n.terminate() } }
        for (i, name) in names.enumerated() {
            let proxy = try RedisPartitionProxy(dir, name: name, ip: E2E.ip(106, kind, host: 1 + i), upstream: redis.ip)
            proxies.append(proxy)
            let config = try dir.write("\(name).conf", Self.nodeConfig(dir, name: name, ip: E2E.ip(104, kind, host: 5 + i),
                                                                        redis: proxy.ip, nodeCount: 3, domain: "capped.test",
                                                                        route: route, cap: 6, perNode: 3))
            nodes.append(try DaemonProcess(configPath: config, backend: kind, threads: 2, logPath: dir.file("\(name).log")))
        }
        #expect(E2E.waitUntil(30) { nodes.allSatisfy { $0.log.contains("shared limits in force") } },
                "\(nodes.map(\.log).joined(separator: "\n---\n"))")

        // 1. Partition: n1 loses Redis, n2 and n3 keep it. n1 keeps to its
        // share (2 of 6) with 3 messages waiting.
        proxies[0].cut()
        #expect(E2E.waitUntil(30) { Self.mode(nodes[0]) == "fallback" }, "\(nodes[0].log)")
        #expect(Self.mode(nodes[1]) == "shared" && Self.mode(nodes[2]) == "shared")
        #expect(Self.lines(nodes[1], "unreachable") == 0 && Self.lines(nodes[2], "unreachable") == 0, "\(nodes[1].log)\n\(nodes[2].log)")
        try Self.inject(nodes[0], "capped.test", count: 3, tag: "n1")
        #expect(E2E.waitUntil(30) { rx.openNow("capped") == 2 }, "open: \(rx.openNow("capped"))")
        proxies[0].restore()
        #expect(E2E.waitUntil(30) { Self.mode(nodes[0]) == "shared" }, "\(nodes[0].log)")

        // 2. The cluster fills to its cap: n2 takes 3 (its max-smtp-out), n3 the last one.
        try Self.inject(nodes[1], "capped.test", count: 6, tag: "n2")
        #expect(E2E.waitUntil(30) { rx.openNow("capped") == 5 }, "open: \(rx.openNow("capped"))")
        try Self.inject(nodes[2], "capped.test", count: 6, tag: "n3")
        #expect(E2E.waitUntil(30) { rx.openNow("capped") == 6 }, "open: \(rx.openNow("capped"))")

        // 3. Redis unreachable from every node: each keeps to 2. n2, holding 3,
        // sheds one: not in a transaction yet (held at the greeting), it
        // closes at once, without a message. n3, holding 1, opens its second
        // after the fallback's entry pause: the receiver never sees more than 6.
        let lost = ClusterReceiver.monotonicNow()
        for p in proxies { p.cut() }
        #expect(E2E.waitUntil(30) { nodes.allSatisfy { Self.mode($0) == "fallback" } }, "\(nodes.map(\.log).joined(separator: "\n---\n"))")
        #expect(nodes[1].log.contains("closing 1 after their current message"), "\(nodes[1].log)")
        #expect(E2E.waitUntil(30) { rx.opens("capped", from: E2E.ip(104, kind, host: 7)).count == 2 && rx.openNow("capped") == 6 },
                "n3 opened \(rx.opens("capped", from: E2E.ip(104, kind, host: 7)).count), open: \(rx.openNow("capped"))")
        #expect(rx.peak("capped") <= 6, "peak \(rx.peak("capped")) past cluster-max-smtp-out 6 when Redis was lost")
        // 4. Redis restarts empty; n3 reaches it first and alone.
        redis.kill()
        try redis.start()
        let returned = ClusterReceiver.monotonicNow()
        proxies[2].restore()
        #expect(E2E.waitUntil(30) { Self.mode(nodes[2]) == "shared" }, "\(nodes[2].log)")
        let asked = Self.cluster(nodes[2])["leaseRequests"] as? Int ?? 0
        // n3's queue (held 2 of its 3, 4 waiting) asks again and again: nothing may open.
        #expect(E2E.waitUntil(30) { Self.cluster(nodes[2])["leaseRequests"] as? Int ?? 0 >= asked + 5 })
        #expect(rx.opensOverCap("capped", after: returned, cap: 6).isEmpty,
                "n3 was granted what n1 and n2 hold: \(rx.opensOverCap("capped", after: returned, cap: 6))")
        proxies[0].restore()
        proxies[1].restore()
        #expect(E2E.waitUntil(30) { nodes.allSatisfy { Self.mode($0) == "shared" } }, "\(nodes.map(\.log).joined(separator: "\n---\n"))")

        // 5. Everything delivered, never more than 6 open after Redis came back.
        rx.release("capped")
        #expect(E2E.waitUntil(60) { rx.messages("capped") == 15 }, "delivered \(rx.messages("capped")) of 15")
        let over = rx.opensOverCap("capped", after: returned, cap: 6)
        #expect(over.isEmpty, "opens past cluster-max-smtp-out 6 after Redis came back: \(over)")
        #expect(rx.peak("capped") <= 6, "peak \(rx.peak("capped")) past cluster-max-smtp-out 6")
        // After the loss each node carried messages on at most its share (2)
        // of the connections it held: n2's third closed without one.
        let n2 = rx.connections("capped", from: E2E.ip(104, kind, host: 6), openedBefore: lost)
        #expect(n2.carried <= 2 && n2.closedEmpty == 1, "n2's connections held at the loss: \(n2)")
        for (i, name) in names.enumerated() where i != 1 {
            let held = rx.connections("capped", from: E2E.ip(104, kind, host: 5 + i), openedBefore: lost)
            #expect(held.carried <= 2, "\(name)'s connections held at the loss: \(held)")
        }
        // Logged once per change: n1 lost Redis twice (partition, outage), the others once.
        for (i, node) in nodes.enumerated() {
            let outages = i == 0 ? 2 : 1
            #expect(Self.lines(node, "unreachable") == outages && Self.lines(node, "shared limits in force") == outages + 1,
                    "\(names[i]):\n\(node.log)")
        }
        print("DaemonClusterFailoverTests.partitionAndRedisReturnKeepTheCap on \(kind): \(String(format: "%.1f", Date().timeIntervalSince(begun))) s, "
              + "peak \(rx.peak("capped")) open")
    }

    /// Two nodes, cap 4, lease TTL 2 s. n1 holds all 4 leases (its connections
    /// held open); n2 asks and gets none. n1 is SIGKILLed: its leases lapse
    /// with the TTL and n2 takes the whole cap; n1 restarted on its spool
    /// delivers what it had accepted; never more than 4 open.
    @Test(arguments: BackendKind.testable)
    func killedNodesLeasesLapseAndTheOtherTakesOver(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let begun = Date()
        let dir = try TestDirectory("cluster-nodekill-\(kind.rawValue)")
        let redis = RedisServerProcess(ip: E2E.ip(105, kind, host: 8))
        try redis.start()
        defer { redis.kill() }
        let rx = try ClusterReceiver(dir, listeners: ["kill": E2E.ip(105, kind, host: 1)], gated: ["kill"])
        defer { rx.terminate() }
        let route = "[\(rx.addresses["kill"]?.ip ?? "")]:\(rx.addresses["kill"]?.port ?? 0)"
        let ips = [E2E.ip(105, kind, host: 5), E2E.ip(105, kind, host: 6)]
        var configs: [String] = []
        var nodes: [DaemonProcess] = []
        defer { for n in nodes { n.terminate() } }
        for (i, name) in ["n1", "n2"].enumerated() {
            configs.append(try dir.write("\(name).conf", Self.nodeConfig(dir, name: name, ip: ips[i], redis: redis.ip, nodeCount: 2,
                                                                          domain: "kill.test", route: route, cap: 4, perNode: 4)))
            nodes.append(try DaemonProcess(configPath: configs[i], backend: kind, threads: 2, logPath: dir.file("\(name).log")))
        }
        #expect(E2E.waitUntil(30) { nodes.allSatisfy { $0.log.contains("shared limits in force") } },
                "\(nodes.map(\.log).joined(separator: "\n---\n"))")
        try Self.inject(nodes[0], "kill.test", count: 8, tag: "n1")
        #expect(E2E.waitUntil(30) { rx.opens("kill", from: ips[0]).count == 4 }, "n1 opened \(rx.opens("kill", from: ips[0]).count)")
        let asked = Self.cluster(nodes[1])["leaseRequests"] as? Int ?? 0
        try Self.inject(nodes[1], "kill.test", count: 8, tag: "n2")
        #expect(E2E.waitUntil(30) { Self.cluster(nodes[1])["leaseRequests"] as? Int ?? 0 >= asked + 3 })
        #expect(rx.opens("kill", from: ips[1]).isEmpty, "n2 opened while n1 held the whole cap")

        let killed = ClusterReceiver.monotonicNow()
        nodes[0].crash()
        #expect(E2E.waitUntil(30) { rx.opens("kill", from: ips[1]).count == 4 },
                "n2 opened \(rx.opens("kill", from: ips[1]).count) after n1 died:\n\(nodes[1].log)")
        let takeover = (rx.opens("kill", from: ips[1]).last ?? killed) - killed
        #expect(rx.peak("kill") <= 4, "peak \(rx.peak("kill")) past cluster-max-smtp-out 4")

        // n1 comes back on its spool; everything both accepted is delivered.
        nodes[0] = try DaemonProcess(configPath: configs[0], backend: kind, threads: 2, logPath: dir.file("n1.log"))
        rx.release("kill")
        #expect(E2E.waitUntil(60) { rx.messages("kill") >= 16 }, "delivered \(rx.messages("kill")) of 16")
        #expect(E2E.waitUntil(30) {
            accounting(dir.file("acct-n1.csv")).of(.delivered).count == 8 && accounting(dir.file("acct-n2.csv")).of(.delivered).count == 8
        }, "n1 \(accounting(dir.file("acct-n1.csv")).of(.delivered).count), n2 \(accounting(dir.file("acct-n2.csv")).of(.delivered).count)")
        #expect(rx.peak("kill") <= 4, "peak \(rx.peak("kill")) past cluster-max-smtp-out 4")
        print("DaemonClusterFailoverTests.killedNodesLeasesLapseAndTheOtherTakesOver on \(kind): n2 held all 4 "
              + "\(String(format: "%.2f", takeover)) s after n1's SIGKILL (lease TTL 2 s); \(String(format: "%.1f", Date().timeIntervalSince(begun))) s")
    }
}

/// A TCP proxy in front of Redis for one node, that the test can cut: cut,
/// it closes its listener (connections are refused, as from a host whose
/// Redis is gone) and every connection it carries; restored, it listens
/// again on the same address. A partition between that node and Redis.
final class RedisPartitionProxy {
    static let script = #"""
    import socket, sys, threading, os, select, signal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    ip, port, up_ip, up_port, cutfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    lock = threading.Lock()
    pairs = []

    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def listen():
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((ip, port))
        l.listen(64)
        return l

    listener = listen()
    print(port, flush=True)
    while True:
        cut = os.path.exists(cutfile)
        if cut and listener is not None:
            listener.close()
            listener = None
            with lock:
                for c, u in pairs:
                    for x in (c, u):
                        try:
                            x.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                pairs.clear()
            open(cutfile + ".done", "w").close()
        elif not cut and listener is None:
            listener = listen()
            os.unlink(cutfile + ".done")
        if listener is None:
            select.select([], [], [], 0.02)
            continue
        if not select.select([listener], [], [], 0.02)[0]:
            continue
        c, _ = listener.accept()
        try:
            u = socket.create_connection((up_ip, up_port), timeout=5)
        except OSError:
            c.close()
            continue
        u.settimeout(None)
        with lock:
            pairs.append((c, u))
        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        threading.Thread(target=pump, args=(u, c), daemon=True).start()
    """#

    let ip: String
    private let cutFile: String
    private let server: PythonServerProcess

    init(_ dir: TestDirectory, name: String, ip: String, upstream: String) throws {
        self.ip = ip
        cutFile = dir.file("cut-\(name)")
        server = try PythonServerProcess(dir, tag: "redis-proxy-\(name)", script: Self.script,
                                         arguments: [ip, "6379", upstream, "6379", cutFile], what: "Redis proxy for \(name)")
    }

    /// Cuts the node off Redis; returns once the proxy has (bounded).
    func cut() {
        FileManager.default.createFile(atPath: cutFile, contents: nil)
        #expect(E2E.waitUntil(10) { FileManager.default.fileExists(atPath: cutFile + ".done") }, "proxy at \(ip) did not cut")
    }

    /// Reconnects the node; returns once the proxy listens again (bounded).
    func restore() {
        try? FileManager.default.removeItem(atPath: cutFile)
        #expect(E2E.waitUntil(10) { !FileManager.default.fileExists(atPath: cutFile + ".done") }, "proxy at \(ip) did not restore")
    }

    func terminate() { server.terminate() }
}
