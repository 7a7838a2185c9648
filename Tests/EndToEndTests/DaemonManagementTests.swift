#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// The management API of the running daemon driven by Python's http.client
/// (not `peregrine ctl`), each action checked in the traffic the sink sees:
/// pause holds a queue's mail while another queue delivers, resume releases
/// it, delete bounces it and the sink never sees it, set-mode is visible;
/// `http-access` gives monitor read-only and none 403; `/metrics` totals equal
/// the accounting file as Python's csv module reads it. Scenario 61: 127.P.61.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonManagementTests {
    static let httpScript = #"""
import http.client, sys
method, host, port, path, src, body, token = sys.argv[1:8]
c = http.client.HTTPConnection(host, int(port), timeout=20, source_address=(src, 0) if src else None)
headers = {"Content-Type": "application/json"} if body else {}
if token:
    headers["Authorization"] = "Bearer " + token
c.request(method, path, body=body or None, headers=headers)
r = c.getresponse()
print(r.status)
print(r.read().decode())
"""#

    /// Reads the accounting file with Python's csv module: every row as long as
    /// the header, then "TYPE COUNT" lines and the bounced recipients.
    static let csvScript = #"""
import csv, sys, collections
with open(sys.argv[1], newline="") as f:
    rows = list(csv.reader(f))
header, data = rows[0], rows[1:]
assert "type" in header and "rcpt" in header, header
bad = [i + 2 for i, r in enumerate(data) if len(r) != len(header)]
assert not bad, "rows with the wrong field count at lines %s" % bad
t, rc = header.index("type"), header.index("rcpt")
for k, v in sorted(collections.Counter(r[t] for r in data).items()):
    print("TYPE", k, v)
for r in data:
    if r[t] == "b":
        print("BOUNCED", r[rc])
print("ROWS", len(data))
"""#

    struct HTTPResult { var status: Int; var body: String }

    @Test(arguments: BackendKind.testable)
    func pauseResumeDeleteAndAccessAreSeenInTheTraffic(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let python = try #require(findTool("python3"), "python3 not installed")
        let dir = try TestDirectory("mgmt-\(kind.rawValue)")
        let listen = E2E.ip(61, kind)
        let mxPause = E2E.ip(61, kind, host: 1), mxOther = E2E.ip(61, kind, host: 2)
        let monitor = E2E.ip(61, kind, host: 3), denied = E2E.ip(61, kind, host: 4)
        let ids = dir.file("sink-ids.txt")
        let sink = try startSink(dir, serviceIP: listen,
                                 sinkProfile("pause", domains: "pause.test", mx: [mxPause])
                                 + sinkProfile("other", domains: "other.test", mx: [mxOther]), ids: ids)
        defer { sink.terminate() }
        let (_, pPause) = try sink.address("pause"), (_, pOther) = try sink.address("other")
        let configPath = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            http-access 127.0.0.0/8 admin
            http-access \(monitor)/32 monitor
            http-access \(denied)/32 none
            <domain pause.test>
                route [\(mxPause)]:\(pPause)
                retry-after 1s
            </domain>
            <domain other.test>
                route [\(mxOther)]:\(pOther)
            </domain>
            """))
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let diagnostics = { "daemon log:\n\(d.log.suffix(2000))\nsink stats: \((try? sink.stats()) ?? [:])" }
        let mgmtHost = String(d.management.split(separator: ":").first ?? "")
        // Every call but a read needs the daemon's token (issue 12 item 5); reads get it too, harmlessly.
        let token = ((try? String(contentsOfFile: d.tokenFile, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        func http(_ method: String, _ path: String, from source: String = "", json: String = "") -> HTTPResult {
            let (status, out) = runTool(python, ["-c", Self.httpScript, method, mgmtHost, d.managementPort, path, source, json,
                                                 token], seconds: 30)
            let lines = out.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
            guard status == 0, let code = lines.first.flatMap({ Int($0) }) else { return HTTPResult(status: -1, body: out) }
            return HTTPResult(status: code, body: lines.count > 1 ? String(lines[1]) : "")
        }
        let queue = queueName("pause.test")
        let queueJSON = #"{"queue": "\#(queue)"}"#
        func queueState() -> [String: Any]? {
            let r = http("GET", "/queues")
            guard r.status == 200, let o = try? E2E.json(Data(r.body.utf8)) else { return nil }
            return (o["queues"] as? [[String: Any]])?.first { $0["queue"] as? String == queue }
        }
        /// Messages the sink accepted for one provider (its id file is written on exit).
        func accepted(_ provider: String) -> Int { (try? sink.providerStats(provider)["messages_accepted"] as? Int) ?? -1 }
        func inject(_ rcpt: String, _ id: String) throws {
            let c = try d.client()
            #expect(try c.send(to: [rcpt], id: id) == nil)
            c.quit()
        }

        // Delivered while running normally.
        try inject("p1@pause.test", "p-1")
        #expect(E2E.waitUntil(30) { accepted("pause") == 1 }, "\(diagnostics())")

        // http-access: monitor reads but may not act; none may not even read.
        #expect(http("GET", "/status", from: monitor).status == 200)
        #expect(http("POST", "/queues/pause", from: monitor, json: queueJSON).status == 403)
        #expect(http("GET", "/status", from: denied).status == 403)

        // Pause: the queue holds what arrives, while another queue delivers after it.
        let paused = http("POST", "/queues/pause", json: queueJSON)
        #expect(paused.status == 200 && paused.body.contains("\"matched\""), "\(paused)")
        for n in 2...4 { try inject("p\(n)@pause.test", "p-\(n)") }
        #expect(E2E.waitUntil(30) { (queueState()?["ready"] as? Int ?? 0) + (queueState()?["delayed"] as? Int ?? 0) == 3 },
                "\(String(describing: queueState())) \(diagnostics())")
        try inject("o1@other.test", "o-1")
        #expect(E2E.waitUntil(30) { accepted("other") == 1 }, "\(diagnostics())")
        #expect(accepted("pause") == 1, "a paused queue delivered: \(diagnostics())")

        // Resume: all three are delivered.
        #expect(http("POST", "/queues/resume", json: queueJSON).status == 200)
        #expect(E2E.waitUntil(30) { accepted("pause") == 4 }, "\(diagnostics())")

        // Delete: a held message bounces and never reaches the sink; the queue works on.
        #expect(http("POST", "/queues/pause", json: queueJSON).status == 200)
        try inject("p5@pause.test", "p-5")
        #expect(E2E.waitUntil(30) { (queueState()?["ready"] as? Int ?? 0) + (queueState()?["delayed"] as? Int ?? 0) == 1 },
                "\(diagnostics())")
        let deleted = http("POST", "/queues/delete", json: queueJSON)
        #expect(deleted.status == 200, "\(deleted)")
        #expect(E2E.waitUntil(30) {
            accounting(dir.file("acct.csv")).of(.bounced).contains { $0.rcpt == "p5@pause.test" }
        }, "\(diagnostics())")
        #expect(http("POST", "/queues/resume", json: queueJSON).status == 200)
        try inject("p6@pause.test", "p-6")
        #expect(E2E.waitUntil(30) { accepted("pause") == 5 }, "\(diagnostics())")

        // set-mode is visible in /queues.
        let toBackoff = http("POST", "/queues/set-mode", json: #"{"queue": "\#(queue)", "mode": "backoff"}"#)
        #expect(toBackoff.status == 200, "\(toBackoff)")
        #expect(queueState()?["mode"] as? String == "backoff", "\(String(describing: queueState()))")
        #expect(http("POST", "/queues/set-mode", json: #"{"queue": "\#(queue)", "mode": "normal"}"#).status == 200)
        #expect(queueState()?["mode"] as? String == "normal")

        // /metrics against the accounting file read by Python's csv module, once all
        // six deliveries and the one bounce are in it.
        let acct = dir.file("acct.csv")
        #expect(E2E.waitUntil(30) { accounting(acct).finals.count == 7 }, "\(diagnostics())")
        let (csvStatus, csvOut) = runTool(python, ["-c", Self.csvScript, acct], seconds: 30)
        #expect(csvStatus == 0, "python csv: \(csvOut)")
        var byType: [String: Int] = [:]
        for line in csvOut.split(separator: "\n") where line.hasPrefix("TYPE ") {
            let w = line.split(separator: " ")
            if w.count == 3 { byType[String(w[1])] = Int(w[2]) }
        }
        #expect(byType["d"] == 6 && byType["b"] == 1, "\(csvOut)")
        #expect(csvOut.contains("BOUNCED p5@pause.test"), "\(csvOut)")
        let metrics = http("GET", "/metrics")
        #expect(metrics.status == 200)
        func metric(_ name: String) -> Int? {
            metrics.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                .flatMap { Int($0.split(separator: " ").last ?? "") }
        }
        #expect(metric("peregrine_delivered_total") == byType["d"], "\(metrics.body)")
        #expect(metric("peregrine_bounced_total") == byType["b"], "\(metrics.body)")
        #expect(metric("peregrine_received_total") == 7, "\(metrics.body)")

        // The sink saw every message once, except the deleted one.
        sink.terminate()
        let seen = recordedIds(ids).map(\.id)
        #expect(seen.sorted() == ["o-1", "p-1", "p-2", "p-3", "p-4", "p-6"], "\(seen)")
    }
}
