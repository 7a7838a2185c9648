import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `peregrine-bench isp-mix`: the sink with every shipped ISP profile (CI-sized
/// time constants) and its DNS responder; the daemon resolves MX through it and
/// runs the shaping operators start from (DOMAIN.md), with pattern lists for
/// the real deferral texts; loadgen injects the consumer mix, and the bench
/// adds a small share of unknown users and greylisted recipients. The run
/// lasts until every accepted message is delivered or bounced (or a deadline),
/// then reconciles ids (sink), bounces (accounting) and deferrals (sink stats,
/// `t` records).
///
/// TLS is on by default, as a Gmail-facing MTA runs: the sink gets a throwaway
/// certificate and serves Gmail's `require-tls` (421-4.7.29 to plain text), the
/// daemon delivers with opportunistic STARTTLS (`use-starttls yes`), and the
/// run fails if a Gmail delivery went out in plain text (`d` records'
/// `dlvTlsProtocol`). `--no-tls` is the plain variant (sink `--no-require-tls`).
/// `--isps gmail,icloud` restricts the mix (CI-sized runs without Yahoo's 72 s
/// suspension or Outlook's 54 s backoff).
///
/// The 2024 bulk-sender rules are enforced by default: the bench makes an
/// RSA-2048 key for the senders' domain (peregrine.test), Peregrine signs every
/// message with it at injection (`domain-key`, aligned with From), the sink
/// verifies with the public key (`--dkim-key`), so the gmail and yahoo profiles
/// refuse what is unsigned, unaligned or lacks RFC 8058 one-click unsubscribe
/// (loadgen `--list-unsubscribe`). `--no-dkim` switches signing off (the sink
/// still enforces): the run then shows Gmail's 5.7.26 and Yahoo's 5.7.9 refusals.
///
/// Asynchronous bounces and complaints: the sink bounces `--bounce-percent`
/// (default 2) and complains about `--complaint-percent` (default 0.1, below
/// Gmail's and Yahoo's 0.3% complaint-penalty) of what it accepted, reporting
/// over SMTP to Peregrine's listener, where `<bounce-processor>` and
/// `<feedback-loop-processor>` read them into `rb` and `f` records. The run
/// waits for the sink's report queue to empty, then matches per provider the
/// reports the sink sent against the records: any difference fails the run.
///
/// The sink's profiles say `time-scale 0.01`; the daemon's time constants are
/// scaled the same way by hand (Yahoo's 2 h suspension → 72 s, Outlook's 90 min
/// of 1/min → 54 s of 100/min).
func runIspMixBench(arguments: [String]) -> Int32 {
    let usage = """
    usage: peregrine-bench isp-mix [--backend epoll|io_uring|dispatch|all] [--count N] [--rate N/s]
                                   [--special-percent P] [--deadline S] [--seed N] [--output-dir DIR]
                                   [--isps all|gmail,yahoo,outlook,icloud,comcast,gmx,orange] [--no-tls] [--no-dkim]
                                   [--bounce-percent P] [--complaint-percent P]
      --isps LIST   only these providers' domains (loadgen mix and special recipients; default all)
      --no-tls      plain text: no certificate, the sink's require-tls off (default: STARTTLS, Gmail requires it)
      --no-dkim     Peregrine does not sign; the sink still enforces the bulk-sender rules (shows the refusals)
      --bounce-percent P     the sink bounces P% of accepted messages asynchronously (default 2; 0: none)
      --complaint-percent P  the sink sends ARF complaints for P% (default 0.1; 0: none)
      --mx-fault SPEC[,SPEC]  the sink's --mx-fault (e.g. gmail:2=blackhole@30s): one MX host fails while
                    the others work; the daemon's connect and greeting timeouts are then scaled × 0.01 like
                    every other time constant (3 s), so a dead host costs CI-sized time
    """
    let defaults = ["backend": "epoll", "count": "5000", "rate": "500/s", "special-percent": "2", "deadline": "600",
                    "seed": "1", "output-dir": "results", "connections": "8", "isps": "all", "mx-fault": "",
                    "bounce-percent": "2", "complaint-percent": "0.1"]
    let options: ScenarioOptions
    switch ScenarioOptions.parse(arguments, defaults: defaults, flags: ["no-tls", "no-dkim"], usage: usage) {
    case .success(let o): options = o
    case .failure(let e): fputs("peregrine-bench isp-mix: \(e.message)\n", stderr); return 2
    }
    do { _ = try IspMixProvider.select(options.string("isps")) } catch let e as BenchUsageError {
        fputs("peregrine-bench isp-mix: \(e.message)\n", stderr); return 2
    } catch { return 2 }
    var rows: [[String]] = []
    var failed = false
    do {
        for backend in try options.backends() {
            let r = try IspMixRun(options: options, backend: backend).run()
            rows.append(r.row)
            if !r.ok { failed = true }
        }
    } catch {
        fputs("peregrine-bench isp-mix: \(error)\n", stderr)
        return 1
    }
    let tlsTitle = (options.flags.contains("no-tls") ? "plain text (--no-tls)" : "STARTTLS, Gmail requires TLS")
        + (options.flags.contains("no-dkim") ? ", bulk-sender rules enforced, NOT signed (--no-dkim)" : ", bulk-sender rules enforced, DKIM-signed")
    printBenchTable(title: "isp-mix: shipped ISP profiles (time-scale 0.01), MX via the sink's DNS, consumer mix + unknown/greylisted, \(tlsTitle)",
                    header: IspMixRun.header, rows: rows)
    return failed ? 1 : 0
}

/// Where the package's files are (sink/profiles, scripts): upwards from the
/// working directory, else upwards from the executable (.build/release/..).
func packageRoot() -> String {
    for start in [FileManager.default.currentDirectoryPath, BenchEnvironment.binDirectory()] {
        var dir = start
        for _ in 0..<8 {
            if FileManager.default.fileExists(atPath: dir + "/sink/profiles/all.conf") { return dir }
            dir = (dir as NSString).deletingLastPathComponent
        }
    }
    return FileManager.default.currentDirectoryPath
}

struct IspMixRun {
    let options: ScenarioOptions
    let backend: String

    static let header = ["backend", "injected", "delivered", "bounced", "deferrals@sink", "t records", "lost", "dup",
                         "unexpected bounces", "rb/async bounces", "f/complaints", "gmail TLS", "all TLS", "protocols", "DKIM", "bulk-sender refusals", "elapsed s", "drained", "result"]

    struct Outcome { var row: [String]; var ok: Bool }

    func run() throws -> Outcome {
        let rig = try ScenarioRig(scenario: "isp-mix")
        defer { rig.cleanUp() }
        let count = try options.int("count")
        let specialPercent = try options.double("special-percent")
        let deadline = try options.double("deadline")
        let root = packageRoot()
        let tls = !options.flags.contains("no-tls")
        let providers = try IspMixProvider.select(options.string("isps"))
        let restricted = providers.count < IspMixProvider.all.count
        fputs("== isp-mix on \(backend): \(count) messages at \(options.string("rate")), \(tls ? "TLS" : "plain text")"
              + (restricted ? ", providers \(providers.map(\.name).joined(separator: ","))" : "") + ", scratch \(rig.work)\n", stderr)

        // MX answers carry port 25 (the daemon, like any MTA, delivers to MX hosts on 25).
        if BenchNet.canConnect(ip: "127.0.1.1", port: 25) {
            throw ScenarioRig.Failure(description: "something already listens on 127.0.1.1:25 (another sink?); isp-mix needs the profile addresses on port 25")
        }
        let dnsPort = rig.ports.dns, statsPort = rig.ports.stats, mtaPort = rig.ports.mta, mgmtPort = rig.ports.mgmt
        let sinkIDs = rig.work + "/sink-ids.txt"
        // Gmail's profile requires TLS: the sink offers STARTTLS with a throwaway certificate, or serves plain text.
        let sinkTLS = tls ? try BenchCertificate.make(in: rig.work, commonName: "mx.sink").sinkArguments : ["--no-require-tls"]
        // The bulk-sender rules: the sink always gets the public key (so gmail/yahoo enforce them); Peregrine signs unless --no-dkim.
        let sign = !options.flags.contains("no-dkim")
        let dkim = try IspMixDKIM.make(in: rig.work)
        let mxFaults = options.string("mx-fault").split(separator: ",").map(String.init)
        let reports = try IspMixAsyncReports(bouncePercent: options.double("bounce-percent"),
                                             complaintPercent: options.double("complaint-percent"))
        var sinkArguments = ["--profile", root + "/sink/profiles/all.conf", "--port", "25",
                             "--dns", "\(rig.ip):\(dnsPort)", "--stats-port", "\(rig.ip):\(statsPort)",
                             "--record-ids", sinkIDs, "--seed", options.string("seed"), "--backend", "epoll"]
        sinkArguments += sinkTLS + dkim.sinkArguments
        sinkArguments += mxFaults.flatMap { ["--mx-fault", $0] }
        sinkArguments += reports.sinkArguments(via: "\(rig.ip):\(mtaPort)")
        let sink = try rig.startSink(sinkArguments)
        let acct = rig.work + "/acct.csv"
        let config = Self.config(ip: rig.ip, mtaPort: mtaPort, mgmtPort: mgmtPort, dnsPort: dnsPort,
                                 spool: rig.work + "/spool", acct: acct, startTLS: tls,
                                 dkimLines: sign ? dkim.configLines : "", scaledTimeouts: !mxFaults.isEmpty,
                                 processorLines: reports.configLines)
        let configPath = rig.work + "/peregrine.conf"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let daemon = try rig.startDaemon(configPath: configPath, backend: backend, smtpPort: mtaPort)
        let cpu0 = ProcessUsage.read(pid: daemon.pid)?.cpuSeconds ?? 0
        var peakRSS = 0
        let start = Date()

        // The hand-addressed share: unknown users (bounce) and greylisted recipients (deliver after a retry).
        let specialDomains = providers.flatMap(\.special)
        let specialCount = Int((Double(count) * specialPercent / 100).rounded())
        var specialAccepted: [(id: String, rcpt: String, expect: String)] = []
        var specialRefused = 0
        if specialCount > 0 {
            let injector = try BenchSMTPInjector(ip: rig.ip, port: mtaPort)
            for i in 0..<specialCount {
                let unknown = i % 2 == 0
                let rcpt = "\(unknown ? "unknown" : "grey")-\(i)@\(specialDomains[(i / 2) % specialDomains.count])"
                let id = "special-\(i)"
                if try injector.send(id: id, from: "bench@\(IspMixDKIM.domain)", to: rcpt, listUnsubscribe: true) {
                    specialAccepted.append((id, rcpt, unknown ? "bounce" : "deliver"))
                } else { specialRefused += 1 }
            }
            injector.quit()
        }

        let loadIDs = rig.work + "/loadgen-ids.txt"
        // The whole mix is loadgen's default; a restricted one is those providers' shares of it.
        let domainMix = restricted ? ["--domains", providers.flatMap(\.mix).map { "\($0.domain)=\($0.weight)" }.joined(separator: ",")] : []
        let summary = try rig.runLoadgen(["--target", "\(rig.ip):\(mtaPort)", "--count", "\(count)", "--rate", options.string("rate"),
                                          "--connections", options.string("connections"), "--ids", loadIDs,
                                          "--seed", options.string("seed"), "--backend", "epoll",
                                          "--from", "news@\(IspMixDKIM.domain)", "--list-unsubscribe"] + domainMix,
                                         jsonPath: rig.work + "/loadgen.json", timeout: deadline) { _ in
            peakRSS = max(peakRSS, rssBytes(daemon.pid))
        }
        let injectSeconds = Date().timeIntervalSince(start)

        // Until the daemon has nothing queued and has settled every message it received.
        var drained = false
        var lastStatus: [String: Any] = [:]
        var samples: [[String: Any]] = []
        var lastSample = Date.distantPast
        while Date().timeIntervalSince(start) < deadline {
            peakRSS = max(peakRSS, rssBytes(daemon.pid))
            if let s = rig.status(mgmtPort: mgmtPort) {
                lastStatus = s
                let received = s["received"] as? Int ?? 0
                let settled = (s["delivered"] as? Int ?? 0) + (s["bounced"] as? Int ?? 0)
                let queued = s["queued"] as? [String: Any]
                let waiting = (queued?["ready"] as? Int ?? 0) + (queued?["delayed"] as? Int ?? 0)
                if Date().timeIntervalSince(lastSample) >= 5 {
                    lastSample = Date()
                    samples.append(["t": Int(Date().timeIntervalSince(start)), "delivered": s["delivered"] ?? 0, "bounced": s["bounced"] ?? 0,
                                    "deferrals": s["deferrals"] ?? 0, "ready": queued?["ready"] ?? 0, "delayed": queued?["delayed"] ?? 0])
                }
                let t = Date().timeIntervalSince(start)
                BenchProgress.every2s("   isp-mix: \(Int(t)) s, received \(received), settled \(settled) "
                                      + "(\(Int(Double(settled) / max(t, 1)))/s), waiting \(waiting)")
                if received > 0 && settled >= received && waiting == 0 { drained = true; break }
            }
            if !daemon.isRunning { break }
            usleep(250_000)
        }
        BenchProgress.finish()
        // The sink reports bounces and complaints after accepting: wait until it has sent (or failed) them all.
        let reportsSettled = reports.waitForSink(ip: rig.ip, statsPort: statsPort, deadline: Date().addingTimeInterval(60))
        let elapsed = Date().timeIntervalSince(start)
        let cpu = (ProcessUsage.read(pid: daemon.pid)?.cpuSeconds ?? cpu0) - cpu0
        let sinkStats = BenchNet.getJSON(ip: rig.ip, port: statsPort, path: "/stats") ?? [:]
        let queues = BenchNet.getJSON(ip: rig.ip, port: mgmtPort, path: "/queues")
        daemon.stop()
        sink.stop()
        let daemonAlive = lastStatus.isEmpty ? "no status" : "ok"

        // Reconcile.
        let acctCounts = try ScenarioRig.accounting(acct)
        let loadAccepted = ScenarioRig.ids(loadIDs)
        let seen = ScenarioRig.ids(sinkIDs)
        let accepted = loadAccepted + specialAccepted.map(\.id)
        let rec = ScenarioRig.reconcile(accepted: accepted, seen: seen)
        let specialByID = Dictionary(uniqueKeysWithValues: specialAccepted.map { ($0.id, $0) })
        var lost: [String] = []
        for id in rec.lost {
            if let s = specialByID[id], acctCounts.bouncedRecipients.contains(s.rcpt) { continue }
            lost.append(id)
        }
        let expectedBounceRcpts = Set(specialAccepted.filter { $0.expect == "bounce" }.map(\.rcpt))
        let unexpectedBounces = acctCounts.bouncedRecipients.subtracting(expectedBounceRcpts)
        let missingBounces = expectedBounceRcpts.subtracting(acctCounts.bouncedRecipients)
        // Messages bounced for other reasons are not lost, but they are not what the profile dictates either.
        // One b record per bounced message: loadgen draws recipients at random, so one address can
        // bounce twice, and counting addresses would call the second message lost.
        let unexpectedBounceRecords = unexpectedBounces.reduce(0) { $0 + (acctCounts.bouncesPerRecipient[$1] ?? 1) }
        let lostCount = max(0, lost.count - unexpectedBounceRecords)
        let totals = sinkStats["totals"] as? [String: Any] ?? [:]
        func sum(_ key: String) -> [String: Int] { (totals[key] as? [String: Int]) ?? [:] }
        var deferralsAtSink: [String: Int] = [:]
        for key in ["messages_deferred", "recipients_deferred", "sessions_refused"] {
            for (reason, n) in sum(key) { deferralsAtSink[reason, default: 0] += n }
        }
        var perProvider: [String: Any] = [:]
        for (name, value) in (sinkStats["providers"] as? [String: Any]) ?? [:] {
            guard var p = value as? [String: Any] else { continue }
            p["ips"] = nil
            perProvider[name] = p
        }
        let injected = (summary["accepted"] as? Int ?? loadAccepted.count) + specialAccepted.count
        let delivered = rec.unique
        let bounced = acctCounts.byType["b"] ?? 0
        let tRecords = (acctCounts.byType["t"] ?? 0) + (acctCounts.byType["tq"] ?? 0)
        let tally = IspMixTLSTally(deliveryProtocols: acctCounts.deliveryProtocols)
        // What fails the run: a message lost, a Gmail delivery in plain text when Gmail requires TLS, no drain, a missing bounce.
        var failures: [String] = []
        if lostCount > 0 { failures.append("lost=\(lostCount)") }
        if tls && tally.gmail.plain > 0 { failures.append("gmail-plain=\(tally.gmail.plain)") }
        if !drained { failures.append("not-drained") }
        if !missingBounces.isEmpty { failures.append("missing-bounces=\(missingBounces.count)") }
        let reportTally = reports.reconcile(sinkStats: sinkStats, acct: acct, providers: providers)
        if !reportsSettled { failures.append("sink-reports-not-sent") }
        failures += reportTally.failures
        // Signed, aligned mail with one-click unsubscribe must pass every provider's bulk-sender rules.
        let bulkSenderRefusals = IspMixDKIM.refusals(totals)
        let bulkSenderRefusalTotal = bulkSenderRefusals.values.reduce(0, +)
        if sign && bulkSenderRefusalTotal > 0 { failures.append("bulk-sender-refusals=\(bulkSenderRefusalTotal)") }
        let enforcing = IspMixDKIM.enforcingProviders(sinkLog: (try? String(contentsOfFile: sink.logPath, encoding: .utf8)) ?? "", providers: providers.map(\.name))
        let verdict = failures.isEmpty ? "ok" : "FAIL(" + failures.joined(separator: ",") + ")"
        let figures: [String: Any] = [
            "config": ["mta": "peregrine", "backend": backend, "config": config,
                       "sinkProfiles": "sink/profiles/all.conf (time-scale 0.01)" + (tls ? ", --tls-cert (throwaway)" : ", --no-require-tls"),
                       "loadgenRate": options.string("rate"), "loadgenCount": count, "specialPercent": specialPercent,
                       "tls": tls, "isps": providers.map(\.name), "dkimSigned": sign, "mxFaults": mxFaults],
            "tls": tls,
            "bulkSenderRules": ["enforced": !enforcing.isEmpty, "enforcedBy": enforcing,
                                "rules": ["require-dkim", "require-dmarc-alignment", "require-list-unsubscribe"],
                                "dkimSigned": sign, "signingDomain": IspMixDKIM.domain, "key": "rsa2048 (made for the run)",
                                "listUnsubscribe": "RFC 8058 (loadgen --list-unsubscribe)",
                                "refusalsAtSink": bulkSenderRefusals, "refusalsAtSinkTotal": bulkSenderRefusalTotal,
                                "bouncesByStatus": acctCounts.bouncesByStatus, "bounceDiagnosticSample": acctCounts.bounceDiagnosticSample],
            "deliveriesOverTLS": tally.overall.overTLS,
            "deliveriesPlain": tally.overall.plain,
            "tlsProtocols": tally.overall.protocols,
            "gmailDelivered": tally.gmail.delivered,
            "gmailDeliveredOverTLS": tally.gmail.overTLS,
            "deliveriesByProvider": tally.json["byProvider"] ?? [:],
            "sinkSessionsTLS": totals["sessions_tls"] ?? 0,
            "sinkTLSHandshakeFailures": totals["tls_handshake_failures"] ?? 0,
            "failures": failures,
            "ok": failures.isEmpty,
            "injected": injected,
            "injectedByLoadgen": summary["accepted"] ?? 0,
            "injectedSpecial": ["unknownUsers": specialAccepted.filter { $0.expect == "bounce" }.count,
                                "greylisted": specialAccepted.filter { $0.expect == "deliver" }.count, "refused": specialRefused],
            "delivered": delivered,
            "bounced": bounced,
            "bouncedByCategory": acctCounts.bouncesByCategory,
            "unexpectedBounces": unexpectedBounceRecords,
            "unexpectedBounceRecipients": unexpectedBounces.count,
            "unexpectedBounceSample": Array(unexpectedBounces.prefix(10)),
            "expectedBouncesMissing": missingBounces.count,
            "deferralsAtSink": deferralsAtSink,
            "deferralsAtSinkTotal": deferralsAtSink.values.reduce(0, +),
            "transientRecords": tRecords,
            "transientRecordsByStatus": acctCounts.transientByStatus,
            "accountingRecords": acctCounts.byType,
            "asyncReports": reportTally.json,
            "sinkProviders": perProvider,
            "daemonStatus": lastStatus,
            "daemonQueuesAtEnd": queues ?? [:],
            "lost": lostCount,
            "lostSample": Array(lost.prefix(10)),
            "duplicates": rec.duplicates,
            "drained": drained,
            "injectSeconds": injectSeconds,
            "elapsedSeconds": elapsed,
            "mtaCpuSeconds": cpu,
            "mtaPeakRSSMB": Double(peakRSS) / 1_048_576,
            "progress": samples,
            "loadgen": summary,
            "summary": [["injected", "\(injected)"], ["delivered", "\(delivered)"], ["bounced", "\(bounced)"],
                        ["deferrals@sink", "\(deferralsAtSink.values.reduce(0, +))"], ["t records", "\(tRecords)"],
                        ["lost", "\(lostCount)"], ["dup", "\(rec.duplicates)"],
                        ["rb records / async bounces sent", reportTally.bounceRatio], ["f records / complaints sent", reportTally.complaintRatio],
                        ["TLS", tls ? "on" : "off"],
                        ["gmail over TLS", IspMixTLSTally.ratio(tally.gmail)], ["over TLS", IspMixTLSTally.ratio(tally.overall)],
                        ["protocols", tally.overall.protocolList],
                        ["bulk-sender rules", enforcing.isEmpty ? "not enforced" : "enforced (\(enforcing.joined(separator: ",")))"],
                        ["DKIM", sign ? "signed" : "off"], ["bulk-sender refusals", "\(bulkSenderRefusalTotal)"], ["elapsed s", fmt(elapsed)], ["drained", drained ? "yes" : "no"],
                        ["result", verdict]],
        ]
        rig.writeResult(target: backend, figures: figures, outputDir: options.string("output-dir"))
        let row = [backend, "\(injected)", "\(delivered)", "\(bounced) " + Self.categories(acctCounts.bouncesByCategory),
                   "\(deferralsAtSink.values.reduce(0, +))", "\(tRecords)", "\(lostCount)", "\(rec.duplicates)",
                   "\(unexpectedBounceRecords)", reportTally.bounceRatio, reportTally.complaintRatio, IspMixTLSTally.ratio(tally.gmail), IspMixTLSTally.ratio(tally.overall),
                   tally.overall.protocolList, sign ? "signed" : "off", "\(bulkSenderRefusalTotal)", fmt(elapsed), drained ? "yes" : "no (\(daemonAlive))", verdict]
        for line in tally.lines { fputs("   \(line)\n", stderr) }
        for line in reportTally.lines { fputs("   \(line)\n", stderr) }
        if !deferralsAtSink.isEmpty {
            fputs("   deferrals at the sink by reason: " + deferralsAtSink.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "\n", stderr)
        }
        if !acctCounts.transientByStatus.isEmpty {
            fputs("   t/tq records by status: " + acctCounts.transientByStatus.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "\n", stderr)
        }
        return Outcome(row: row, ok: failures.isEmpty)
    }

    static func categories(_ c: [String: Int]) -> String {
        c.isEmpty ? "" : "(" + c.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"
    }

    /// The daemon's config: shaping from DOMAIN.md, time constants × 0.01 like the sink's profiles.
    static func config(ip: String, mtaPort: UInt16, mgmtPort: UInt16, dnsPort: UInt16, spool: String, acct: String,
                       startTLS: Bool, dkimLines: String = "", scaledTimeouts: Bool = false, processorLines: String = "") -> String {
        """
        smtp-listener \(ip):\(mtaPort)
        http-mgmt-port \(ip):\(mgmtPort)
        spool \(spool)
        host-name mta.peregrine.test
        dns-server \(ip):\(dnsPort)
        \(IspMixProvider.all.filter { $0.domains.count > 1 }.map { "domain-macro \($0.name) \($0.domains.joined(separator: ","))" }.joined(separator: "\n"))
        <source 127.0.0.0/8>
            always-allow-relaying yes
            process-x-virtual-mta yes
            process-x-job yes
        \(dkimLines)</source>
        <acct-file \(acct)>
            records d,b,t,tq,rb,f
        </acct-file>
        \(processorLines)
        # The receivers' real deferral texts (DOMAIN.md); durations × 0.01 like the sink's profiles.
        <smtp-pattern-list receivers>
            reply /4\\.7\\.28/ mode=backoff
            reply /\\[TSS04\\]/ suspend=72s
            reply /\\(S775\\)/ mode=backoff
        </smtp-pattern-list>
        <domain *>
            max-smtp-out 10
            # Opportunistic STARTTLS, as operators run it (Gmail's profile refuses plain text).
            use-starttls \(startTLS ? "yes" : "no")
            retry-after 5s
            backoff-retry-after 10s
        \(scaledTimeouts ? "    # An MX host fails in this run: connect and greeting timeouts (2 and 5 min) × 0.01, rounded up.\n    connect-timeout 3s\n    smtp-greeting-timeout 3s\n" : "")
            bounce-after 30m
            smtp-pattern-list receivers
            # As ESPs run it: bounces are read from the accounting file, no
            # report goes back to the (synthetic) senders.
            deliver-local-dsn no
        </domain>
        <domain $gmail>
            max-smtp-out 5
            max-msg-per-connection 50
            backoff-max-msg-rate 20/s
            backoff-to-normal-after 9s
        </domain>
        <domain $yahoo>
            max-smtp-out 20
            max-msg-per-connection 20
        </domain>
        <domain $outlook>
            mx-rollup yes
            max-smtp-out 5
            max-msg-per-connection 50
            backoff-max-msg-rate 100/m
            backoff-to-normal-after 54s
        </domain>
        <domain $icloud>
            max-smtp-out 10
            max-msg-per-connection 5
        </domain>
        <domain comcast.net>
            max-smtp-out 25
            max-msg-per-connection 1000
        </domain>
        <domain $gmx>
            max-smtp-out 4
            max-msg-per-connection 20
        </domain>
        <domain $orange>
            max-smtp-out 2
            max-msg-per-connection 100
        </domain>

        """
    }
}
