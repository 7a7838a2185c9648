import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `peregrine-bench cluster` (issue #21): three `peregrine run` nodes, each on
/// a loopback address of its own (also its source IP), one `redis-server`
/// (`--save ''`), one peregrine-sink with two providers, and a loadgen per
/// node injecting at once. Phase 1: N messages to the capped provider
/// (`cluster-max-smtp-out`, `cluster-max-msg-rate` per domain); the sink's
/// peak concurrent connections and its busiest second against the cluster
/// limits, lost (must be 0), Redis round trips per delivered message (the
/// nodes' GET /cluster). `--kill node|redis` SIGKILLs node 2 (restarted on
/// its spool) or Redis (restarted empty) mid-run. Phase 2: the sink puts
/// node 1's source IP in its penalty box (421-4.7.28); node 1 meets it, and
/// the time from its backoff to nodes 2 and 3's (their log lines, ms) is the
/// propagation delay.
func runClusterBench(arguments: [String]) -> Int32 {
    let usage = """
    usage: peregrine-bench cluster [--backend epoll|io_uring|dispatch] [--count N] [--connections N]
                                   [--cluster-connections N] [--cluster-rate N/s] [--max-smtp-out N]
                                   [--kill none|node|redis] [--drain-timeout S] [--output-dir DIR]
                                   [--throughput-count N]   (1 node, then 3, to a provider without cluster limits; 0: skip)
                                   [--netns yes|no]   (each node in its own network namespace, veth pairs to a bridge; root)
    """
    let defaults = ["backend": "epoll", "count": "100000", "connections": "8", "cluster-connections": "24",
                    "cluster-rate": "1500/s", "max-smtp-out": "20", "kill": "none", "drain-timeout": "900", "throughput-count": "20000", "netns": "no",
                    "output-dir": "results"]
    let options: ScenarioOptions
    switch ScenarioOptions.parse(arguments, defaults: defaults, usage: usage) {
    case .success(let o): options = o
    case .failure(let e): fputs("peregrine-bench cluster: \(e.message)\n", stderr); return 2
    }
    do {
        guard ["none", "node", "redis"].contains(options.string("kill")) else { throw BenchUsageError("--kill takes none, node or redis") }
        guard ["yes", "no"].contains(options.string("netns")) else { throw BenchUsageError("--netns takes yes or no") }
        let backends = try options.backends()
        guard backends.count == 1 else { throw BenchUsageError("--backend: one backend per cluster run") }
        let run = try ClusterRun(options: options, backend: backends[0])
        defer { run.stopAll(); run.rig.cleanUp(); run.netns?.tearDown() }
        return try run.run() ? 0 : 1
    } catch let e as BenchUsageError {
        fputs("peregrine-bench cluster: \(e.message)\n", stderr)
        return 2
    } catch {
        fputs("peregrine-bench cluster: \(error)\n", stderr)
        return 1
    }
}

final class ClusterRun {
    let options: ScenarioOptions
    let backend: String
    let rig: ScenarioRig
    let nodeNames = ["n1", "n2", "n3"]
    /// Node k's own address: the bench's run address with the second octet
    /// moved by 8·(k+1), still in the bench's 127.128-191 range and as unique
    /// per bench process as the run address.
    let nodeIPs: [String]
    var nodes: [BenchProcess] = []
    var redis: BenchProcess?
    let redisPath: String
    let cappedPort: UInt16, penaltyPort: UInt16, openPort: UInt16
    /// Where the sink and Redis listen and the loadgens connect from: the
    /// run's loopback address, or the bridge's address with --netns yes.
    let hub: String
    /// The namespaces and bridge with --netns yes (nil: every node on loopback).
    let netns: ClusterNamespaces?

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(options: ScenarioOptions, backend: String) throws {
        self.options = options
        self.backend = backend
        rig = try ScenarioRig(scenario: "cluster")
        let parts = rig.ip.split(separator: ".").compactMap { Int($0) }
        guard parts.count == 4 else { throw Failure(description: "run address \(rig.ip)") }
        if options.string("netns") == "yes" {
            let n = try ClusterNamespaces(nodes: 3)
            netns = n
            hub = n.bridgeIP
            nodeIPs = n.nodeIPs
        } else {
            netns = nil
            hub = rig.ip
            nodeIPs = (0..<3).map { k in "127.\(128 + (parts[1] - 128 + 8 * (k + 1)) % 64).\(parts[2]).\(parts[3])" }
        }
        guard let path = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Failure(description: "redis-server is not installed (scripts/setup installs it)")
        }
        redisPath = path
        cappedPort = rig.ports.sink
        penaltyPort = rig.ports.base + 6
        openPort = rig.ports.base + 7
    }

    static let penaltyText = "421-4.7.28 [{ip} 15] Our system has detected an unusual rate of unsolicited mail originating from your IP address."

    func file(_ name: String) -> String { rig.work + "/" + name }

    /// The nodes and Redis (the rig stops the sink and the loadgens).
    func stopAll() {
        for n in nodes where n.isRunning { n.stop() }
        if let r = redis, r.isRunning { r.stop() }
    }

    func startRedis() throws {
        let p = BenchProcess(name: "redis", executable: redisPath,
                             arguments: ["--bind", hub, "--port", "6379", "--save", "", "--appendonly", "no",
                                         "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"],
                             logPath: file("redis-\(Int(Date().timeIntervalSince1970 * 1000)).log"))
        try p.start()
        guard BenchNet.waitForListener(ip: hub, port: 6379, timeout: 30) else { throw Failure(description: "redis-server: \(p.logTail)") }
        redis = p
    }

    func nodeConfig(_ k: Int) throws -> String {
        let name = nodeNames[k], ip = nodeIPs[k]
        let text = """
        smtp-listener \(ip):2525
        http-mgmt-port \(ip):8125
        spool \(file("spool-\(name)"))
        log-file \(file("\(name).log"))
        host-name \(name).bench.test
        cluster-redis \(hub):6379
        cluster-node-name \(name)
        cluster-node-count 3
        \(netns.map { "http-access \($0.subnet) monitor" } ?? "")
        <source \(netns == nil ? "127.0.0.0/8" : netns?.subnet ?? "")>
            always-allow-relaying yes
            process-x-virtual-mta yes
            default-virtual-mta vmta1
        </source>
        <virtual-mta vmta1>
            smtp-source-host \(ip) \(name).bench.test
        </virtual-mta>
        <acct-file \(file("acct-\(name).csv"))>
            records d,b,t
        </acct-file>
        <smtp-pattern-list gmail>
            reply /4\\.7\\.28/ mode=backoff
        </smtp-pattern-list>
        <domain capped.test>
            route [\(hub)]:\(cappedPort)
            max-smtp-out \(try options.int("max-smtp-out"))
            cluster-max-smtp-out \(try options.int("cluster-connections"))
            cluster-max-msg-rate \(options.string("cluster-rate"))
            retry-after 2s
        </domain>
        <domain open.test>
            route [\(hub)]:\(openPort)
            max-smtp-out \(try options.int("max-smtp-out"))
        </domain>
        <domain gmail.test>
            route [\(hub)]:\(penaltyPort)
            max-smtp-out 2
            smtp-pattern-list gmail
            backoff-max-msg-rate 1/m
            backoff-to-normal-after 60s
            retry-after 1s
            backoff-retry-after 1s
        </domain>

        """
        let path = file("\(name).conf")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func startNode(_ k: Int) throws -> BenchProcess {
        let run = ["run", "--config", file("\(nodeNames[k]).conf"), "--backend", backend]
        // In its namespace: `ip netns exec` enters it and execs the node (same pid, so SIGKILL reaches the node).
        let p = BenchProcess(name: nodeNames[k], executable: netns.map { $0.ipTool } ?? rig.bin + "/peregrine",
                             arguments: netns.map { ["netns", "exec", $0.namespaces[k], rig.bin + "/peregrine"] + run } ?? run,
                             logPath: file("\(nodeNames[k])-stderr-\(Int(Date().timeIntervalSince1970 * 1000)).log"))
        try p.start()
        guard BenchNet.waitForListener(ip: nodeIPs[k], port: 2525, timeout: 120) else {
            throw Failure(description: "\(nodeNames[k]) did not start: \(p.logTail)")
        }
        return p
    }

    func nodeLog(_ k: Int) -> String { (try? String(contentsOfFile: file("\(nodeNames[k]).log"), encoding: .utf8)) ?? "" }
    func cluster(_ k: Int) -> [String: Any] { BenchNet.getJSON(ip: nodeIPs[k], port: 8125, path: "/cluster") ?? [:] }
    func status(_ k: Int) -> [String: Any] { BenchNet.getJSON(ip: nodeIPs[k], port: 8125, path: "/status") ?? [:] }
    func sinkStats() -> [String: Any] { BenchNet.getJSON(ip: hub, port: rig.ports.stats, path: "/stats") ?? [:] }

    func waitUntil(_ seconds: Double, every: UInt32 = 100_000, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(every)
        }
        return condition()
    }

    func run() throws -> Bool {
        let count = max(3, try options.int("count"))
        let killMode = options.string("kill")
        let drainTimeout = try options.double("drain-timeout")
        fputs("== cluster on \(backend): 3 nodes \(nodeIPs.joined(separator: ", ")), redis \(hub):6379\(netns == nil ? "" : " (network namespaces)"), \(count) messages, kill \(killMode); scratch \(rig.work)\n", stderr)
        let profile = """
        <isp capped>
            domains capped.test
            mx \(hub)
            port \(cappedPort)
            hostname mx.capped.sink
        </isp>
        <isp open>
            domains open.test
            mx \(hub)
            port \(openPort)
            hostname mx.open.sink
        </isp>
        <isp penalty>
            domains gmail.test
            mx \(hub)
            port \(penaltyPort)
            hostname mx.penalty.sink
            max-msg-rate 20/s mail burst 10 penalty "\(Self.penaltyText)"
            penalty-box 60s mail "\(Self.penaltyText)"
        </isp>

        """
        try profile.write(toFile: file("sink.conf"), atomically: true, encoding: .utf8)
        let sinkIDs = file("sink-ids.txt")
        let sink = try rig.startSink(["--profile", file("sink.conf"), "--record-ids", sinkIDs,
                                      "--stats-port", "\(hub):\(rig.ports.stats)", "--backend", "epoll", "--quiet"])
        try startRedis()
        for k in 0..<3 { _ = try nodeConfig(k) }
        for k in 0..<3 { nodes.append(try startNode(k)) }
        guard waitUntil(60, { (0..<3).allSatisfy { nodeLog($0).contains("shared limits in force") } }) else {
            throw Failure(description: "nodes never reached Redis:\n" + (0..<3).map { nodeLog($0) }.joined(separator: "\n---\n"))
        }

        // Phase 0: throughput of one node, then of the three, to a provider
        // without cluster limits (the capped one runs at its rate whatever the node count).
        let throughputCount = try options.int("throughput-count")
        var throughput: [String: Any] = [:]
        if throughputCount > 0 {
            let one = try measureThroughput(nodes: [0], count: throughputCount)
            let three = try measureThroughput(nodes: [0, 1, 2], count: throughputCount)
            throughput = ["count": throughputCount, "oneNode": one, "threeNodes": three,
                          "threeOverOne": (three["deliveredPerSecond"] as? Double ?? 0) / max(1e-9, one["deliveredPerSecond"] as? Double ?? 0)]
        }

        // Phase 1: every node injected at once, all to the capped provider.
        // The count split exactly: node k injects count/3, the first count%3 nodes one more.
        let perNode = (0..<3).map { count / 3 + ($0 < count % 3 ? 1 : 0) }
        var loadgens: [BenchProcess] = []
        let injectStart = Date()
        for k in 0..<3 {
            loadgens.append(try rig.start("loadgen-\(nodeNames[k])", "peregrine-loadgen", [
                "--target", "\(nodeIPs[k]):2525", "--count", "\(perNode[k])", "--connections", options.string("connections"),
                "--messages-per-connection", "0", "--domains", "capped.test", "--size", "2k", "--ids", file("ids-\(nodeNames[k]).txt"),
                "--json", file("loadgen-\(nodeNames[k]).json"), "--no-progress", "--seed", "\(k + 1)", "--backend", "epoll"]))
        }
        var killed: [String: Any]? = nil
        let killAt = count * 2 / 5
        // The nodes' counters include the throughput phase's messages: the kill comes at 40 % of this phase's.
        let receivedBefore = (0..<3).reduce(0) { $0 + (status($1)["received"] as? Int ?? 0) }
        var peakOpenSampled = 0
        while loadgens.contains(where: { $0.isRunning }) {
            usleep(100_000)
            if Date().timeIntervalSince(injectStart) > drainTimeout { loadgens.forEach { $0.stop() }; break }
            let capped = (sinkStats()["providers"] as? [String: Any])?["capped"] as? [String: Any]
            peakOpenSampled = max(peakOpenSampled, capped?["open_connections"] as? Int ?? 0)
            let received = (0..<3).reduce(0) { $0 + (status($1)["received"] as? Int ?? 0) } - receivedBefore
            BenchProgress.every2s("   cluster: \(Int(Date().timeIntervalSince(injectStart))) s, nodes received \(received)")
            if killMode != "none" && killed == nil && received >= killAt {
                killed = try kill(mode: killMode, received: received, since: injectStart)
            }
        }
        BenchProgress.finish()
        let injectSeconds = Date().timeIntervalSince(injectStart)
        if killMode != "none" && killed == nil { killed = try kill(mode: killMode, received: -1, since: injectStart) }
        var accepted: [String] = []
        var loadgenSummaries: [String: Any] = [:]
        for k in 0..<3 {
            accepted += ScenarioRig.ids(file("ids-\(nodeNames[k]).txt"))
            if let data = FileManager.default.contents(atPath: file("loadgen-\(nodeNames[k]).json")),
               let o = try? JSONSerialization.jsonObject(with: data) { loadgenSummaries[nodeNames[k]] = o }
        }
        fputs("   injected: \(accepted.count) accepted in \(fmt(injectSeconds)) s; draining\n", stderr)
        var lastRecorded = -1, lastChange = Date()
        while Date().timeIntervalSince(injectStart) < drainTimeout {
            let recorded = (sinkStats()["record_ids"] as? [String: Any])?["recorded"] as? Int ?? 0
            if recorded != lastRecorded { lastRecorded = recorded; lastChange = Date() }
            let waiting = (0..<3).reduce(0) { sum, k in
                let q = status(k)["queued"] as? [String: Any]
                return sum + (q?["ready"] as? Int ?? 1) + (q?["delayed"] as? Int ?? 1)
            }
            BenchProgress.every2s("   cluster drain: \(recorded)/\(accepted.count) at the sink, \(waiting) queued")
            if recorded >= accepted.count && waiting == 0 { break }
            if Date().timeIntervalSince(lastChange) > 60 { break }
            usleep(200_000)
        }
        BenchProgress.finish()
        let runSeconds = Date().timeIntervalSince(injectStart)
        let stats = sinkStats()
        let capped = (stats["providers"] as? [String: Any])?["capped"] as? [String: Any] ?? [:]
        let clusterViews = (0..<3).map { cluster($0) }
        let roundTrips = clusterViews.reduce(0) { $0 + ($1["roundTrips"] as? Int ?? 0) }
        let rateRoundTrips = clusterViews.reduce(0) { $0 + ($1["rateRoundTrips"] as? Int ?? 0) }

        let ratePerSecond = Double(options.string("cluster-rate").split(separator: "/").first.flatMap { Int($0) } ?? 0)
        // ClusterMessageGate's bound for one second: rate + 2 batches (20) per node + 1 (CLUSTER.md).
        let capConnections = try options.int("cluster-connections")
        let peak = capped["peak_concurrent_connections"] as? Int ?? -1
        let sinkAccepted = capped["messages_accepted"] as? Int ?? -1

        // Phase 2: 4.7.28 on n1, backoff on n2 and n3.
        let propagation = try measureBackoffPropagation()

        for n in nodes { n.stop() }
        let spoolChecks = (0..<3).map { k in
            BenchEnvironment.commandOutput(rig.bin + "/peregrine", ["spool-check", file("spool-\(nodeNames[k])")])?
                .split(separator: "\n").last.map(String.init) ?? "spool-check failed"
        }
        redis?.stop()
        // Stopped first: the sink writes its id list in batches, the last on exit.
        sink.stop()
        // Reconcile by id, and the sink's busiest second (arrival times of the accepted ids).
        let seenLines = (try? String(contentsOfFile: sinkIDs, encoding: .utf8)) ?? ""
        var seen: [String] = []
        var arrivals: [Int64] = []
        let acceptedSet = Set(accepted)
        for line in seenLines.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard let id = f.first.map(String.init) else { continue }
            seen.append(id)
            if f.count > 1, let ns = Int64(f[1]), acceptedSet.contains(id) { arrivals.append(ns) }
        }
        let rec = ScenarioRig.reconcile(accepted: accepted, seen: seen)
        // The capped phase's messages delivered (the sink also saw the throughput phases').
        let cappedDelivered = Set(seen).intersection(acceptedSet).count
        arrivals.sort()
        var busiest = 0, lo = 0
        for hi in arrivals.indices {
            while arrivals[hi] - arrivals[lo] >= 1_000_000_000 { lo += 1 }
            busiest = max(busiest, hi - lo + 1)
        }
        let deliverySpan = arrivals.count > 1 ? Double(arrivals.last! - arrivals.first!) / 1e9 : 0

        // The issue's bound: no second at the sink holds more than the rate
        // (ClusterMessageGate paces at 99 % of it, its jitter budget; CLUSTER.md).
        let rateBound = Int(ratePerSecond)
        let limitsHeld = peak <= capConnections && busiest <= rateBound
        let ok = rec.lost.isEmpty && accepted.count > 0 && limitsHeld && (propagation["allInBackoff"] as? Bool ?? false)
        let figures: [String: Any] = [
            "config": ["mta": "peregrine", "backend": backend, "count": count, "nodes": 3, "kill": killMode,
                       "netns": netns != nil, "nodeIPs": nodeIPs, "hub": hub,
                       "clusterMaxSmtpOut": capConnections, "clusterMaxMsgRate": options.string("cluster-rate"),
                       "maxSmtpOutPerNode": try options.int("max-smtp-out"), "loadgenConnectionsPerNode": try options.int("connections"),
                       "nodeConfig": (try? String(contentsOfFile: file("n1.conf"), encoding: .utf8)) ?? ""],
            "accepted": accepted.count,
            "deliveredUnique": rec.unique,
            "lost": rec.lost.count,
            "lostSample": Array(rec.lost.prefix(10)),
            "duplicates": rec.duplicates,
            "injectSeconds": injectSeconds,
            "runSeconds": runSeconds,
            "deliverySpanSeconds": deliverySpan,
            "deliveredPerSecond": deliverySpan > 0 ? Double(cappedDelivered) / deliverySpan : 0,
            "sinkPeakConcurrentConnections": peak,
            "sinkMessagesAccepted": sinkAccepted,
            "sinkOpenConnectionsPeakSampled": peakOpenSampled,
            "clusterMaxSmtpOut": capConnections,
            "sinkBusiestSecond": busiest,
            "clusterMaxMsgRatePerSecond": ratePerSecond,
            "rateBoundPerSecond": rateBound,
            "limitsHeld": limitsHeld,
            "redisRoundTrips": roundTrips,
            "redisRateRoundTrips": rateRoundTrips,
            "cappedDelivered": cappedDelivered,
            "redisRoundTripsPerDelivered": cappedDelivered > 0 ? Double(roundTrips) / Double(cappedDelivered) : -1,
            "redisRateRoundTripsPerDelivered": cappedDelivered > 0 ? Double(rateRoundTrips) / Double(cappedDelivered) : -1,
            "clusterViews": clusterViews,
            "kill": killed ?? [:],
            "backoffPropagation": propagation,
            "spoolChecks": spoolChecks,
            "throughput": throughput,
            "loadgen": loadgenSummaries,
            "sinkCapped": capped,
            "summary": [["accepted", "\(accepted.count)"], ["lost", "\(rec.lost.count)"],
                        ["peak conns", "\(peak)/\(capConnections)"], ["busiest s", "\(busiest)/\(Int(ratePerSecond))"],
                        ["RTT/msg", fmt(cappedDelivered > 0 ? Double(roundTrips) / Double(cappedDelivered) : -1, 3)],
                        ["backoff ms", "\(propagation["lastNodeMs"] ?? "-")"],
                        ["3 vs 1 node", fmt(throughput["threeOverOne"] as? Double ?? -1, 2)]],
        ]
        let target = (netns == nil ? backend : "\(backend)-netns") + (killMode == "none" ? "" : "-kill-\(killMode)")
        rig.writeResult(target: target, figures: figures,
                        outputDir: options.string("output-dir"))
        printBenchTable(title: "cluster: 3 nodes, one Redis, one sink (lost must be 0; peak and busiest second within the cluster limits)",
                        header: ["backend", "kill", "accepted", "delivered", "lost", "dup", "peak conns", "cap", "busiest s", "rate/s",
                                 "RTT/msg", "rate RTT/msg", "backoff n2 ms", "backoff n3 ms"],
                        rows: [[backend, killMode, "\(accepted.count)", "\(cappedDelivered)", "\(rec.lost.count)", "\(rec.duplicates)",
                                "\(peak)", "\(capConnections)", "\(busiest)", "\(Int(ratePerSecond))",
                                fmt(cappedDelivered > 0 ? Double(roundTrips) / Double(cappedDelivered) : -1, 3),
                                fmt(cappedDelivered > 0 ? Double(rateRoundTrips) / Double(cappedDelivered) : -1, 3),
                                "\(propagation["n2Ms"] ?? "-")", "\(propagation["n3Ms"] ?? "-")"]])
        if !rec.lost.isEmpty { fputs("   LOST \(rec.lost.count): \(rec.lost.prefix(5))\n", stderr) }
        return ok
    }

    /// Injects `count` messages to open.test split over `nodes` (a loadgen
    /// each, at once) and times them until the sink has them all: the
    /// delivered rate of that many nodes.
    func measureThroughput(nodes used: [Int], count: Int) throws -> [String: Any] {
        func accepted() -> Int {
            ((sinkStats()["providers"] as? [String: Any])?["open"] as? [String: Any])?["messages_accepted"] as? Int ?? 0
        }
        let before = accepted()
        let start = Date()
        var loadgens: [BenchProcess] = []
        for (i, k) in used.enumerated() {
            let n = count / used.count + (i < count % used.count ? 1 : 0)
            loadgens.append(try rig.start("loadgen-tp\(used.count)-\(nodeNames[k])", "peregrine-loadgen", [
                "--target", "\(nodeIPs[k]):2525", "--count", "\(n)", "--connections", options.string("connections"),
                "--messages-per-connection", "0", "--domains", "open.test", "--size", "2k",
                "--json", file("loadgen-tp\(used.count)-\(nodeNames[k]).json"), "--no-progress", "--seed", "\(10 * used.count + k)",
                "--backend", "epoll"]))
        }
        var delivered = 0
        let done = waitUntil(600) {
            delivered = accepted() - before
            BenchProgress.every2s("   throughput, \(used.count) node(s): \(delivered)/\(count) at the sink")
            return delivered >= count
        }
        BenchProgress.finish()
        let seconds = Date().timeIntervalSince(start)
        for l in loadgens where l.isRunning { l.stop() }
        fputs("   throughput, \(used.count) node(s): \(delivered) delivered in \(fmt(seconds)) s\n", stderr)
        return ["nodes": used.count, "delivered": delivered, "complete": done, "seconds": seconds,
                "deliveredPerSecond": Double(delivered) / max(1e-9, seconds)]
    }

    /// SIGKILLs node 2 (restarted on its spool) or Redis (restarted, empty).
    func kill(mode: String, received: Int, since start: Date) throws -> [String: Any] {
        let at = Date().timeIntervalSince(start)
        if mode == "node" {
            Glibc.kill(nodes[1].pid, SIGKILL)
            _ = nodes[1].wait(timeout: 10)
            fputs("   SIGKILL n2 at \(fmt(at, 2)) s (nodes had received \(received))\n", stderr)
            let t0 = Date()
            nodes[1] = try startNode(1)
            return ["what": "node n2", "atSeconds": at, "nodesReceived": received, "restartSeconds": Date().timeIntervalSince(t0)]
        }
        guard let r = redis else { return [:] }
        Glibc.kill(r.pid, SIGKILL)
        _ = r.wait(timeout: 10)
        fputs("   SIGKILL redis at \(fmt(at, 2)) s (nodes had received \(received))\n", stderr)
        let fallback = waitUntil(30) { (0..<3).allSatisfy { cluster($0)["mode"] as? String == "fallback" } }
        // Down long enough for deliveries in fallback (each node 1/3 of the limits).
        usleep(3_000_000)
        try startRedis()
        let resumed = waitUntil(60) { (0..<3).allSatisfy { cluster($0)["mode"] as? String == "shared" } }
        return ["what": "redis", "atSeconds": at, "nodesReceived": received, "allInFallback": fallback,
                "allSharedAgain": resumed, "downSeconds": Date().timeIntervalSince(start) - at]
    }

    /// Trips the sink's per-IP rate from n1's source address (the penalty box
    /// then answers 4.7.28 to n1 only), sends n1 one gmail.test message, and
    /// reads the three nodes' "entering backoff mode" lines (ms timestamps).
    func measureBackoffPropagation() throws -> [String: Any] {
        // With namespaces n1's address is not on this host's side: trip the box from inside n1's namespace.
        let trip = netns.map { $0.tripPenalty(namespace: 0, hub: hub, port: penaltyPort) } ?? tripPenalty(from: nodeIPs[0])
        let injector = try BenchSMTPInjector(ip: nodeIPs[0], port: 2525)
        _ = try injector.send(id: "backoff-probe", from: "bench@peregrine.test", to: "probe@gmail.test")
        injector.quit()
        let marker = "gmail.test/vmta1"
        func entered(_ k: Int) -> Double? {
            for line in nodeLog(k).split(separator: "\n") where line.contains("entering backoff mode") && line.contains(marker) {
                return Self.logTime(line)
            }
            return nil
        }
        let all = waitUntil(30, every: 20_000) { (0..<3).allSatisfy { entered($0) != nil } }
        var out: [String: Any] = ["trip": trip ?? "no refusal", "allInBackoff": all]
        guard let a = entered(0) else { return out }
        out["n1Line"] = nodeLog(0).split(separator: "\n").first { $0.contains("entering backoff mode") && $0.contains(marker) }.map(String.init) ?? ""
        var last = 0
        for k in 1..<3 {
            guard let t = entered(k) else { continue }
            let ms = Int(((t - a) * 1000).rounded())
            out["\(nodeNames[k])Ms"] = ms
            last = max(last, ms)
        }
        out["lastNodeMs"] = last
        // n1's accounting `t` record for the 4.7.28 (whole seconds in the file).
        if let acct = try? ScenarioRig.accounting(file("acct-n1.csv")) { out["n1TransientByStatus"] = acct.transientByStatus }
        return out
    }

    /// "2026-12-05T21:23:30.123Z ..." → seconds since the epoch.
    static func logTime(_ line: Substring) -> Double? {
        guard line.count > 24 else { return nil }
        let stamp = String(line.prefix(23))   // YYYY-MM-DDTHH:MM:SS.mmm
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS"
        return f.date(from: stamp)?.timeIntervalSince1970
    }

    /// EHLO and MAIL/RSET pairs from `source` to the penalty provider until it answers 4.7.28.
    func tripPenalty(from source: String) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func sockaddr4(_ ip: String, _ port: UInt16) -> sockaddr_in {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            inet_pton(AF_INET, ip, &sa.sin_addr)
            return sa
        }
        var local = sockaddr4(source, 0), remote = sockaddr4(hub, penaltyPort)
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withUnsafePointer(to: &local, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }) == 0,
              withUnsafePointer(to: &remote, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } }) == 0 else {
            return nil
        }
        let bytes = Array(("EHLO trip.test\r\n" + String(repeating: "MAIL FROM:<trip@peregrine.test>\r\nRSET\r\n", count: 16)).utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !text.contains("4.7.28") {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        return text.components(separatedBy: "\r\n").first { $0.contains("4.7.28") }
    }
}
