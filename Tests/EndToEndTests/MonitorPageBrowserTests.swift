#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// The live monitor (`GET /` on the management port, issue 17) in headless
/// Chromium against a daemon under load from peregrine-loadgen: the totals on
/// the page move, each lies between the JSON API's figure read just before and
/// just after it, and clicking a queue's Pause button pauses the queue (the API
/// says so) through the authenticated API. Chromium is driven over the DevTools
/// protocol on a pipe (--remote-debugging-pipe: NUL-terminated JSON on fds 3
/// and 4), from Python's standard library. Scenario 218: 127.P.218.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct MonitorPageBrowserTests {
    static let driver = #"""
import fcntl, json, os, subprocess, sys, time, urllib.request
chromium, page, api, queue, profile = sys.argv[1:6]
cmd_r, cmd_w = os.pipe()
evt_r, evt_w = os.pipe()
# Above 4, so the dup2 onto 3 and 4 in the child cannot clobber one of them.
cmd_r2, evt_w2 = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
def child():
    os.dup2(cmd_r2, 3); os.dup2(evt_w2, 4)
proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
                         "--user-data-dir=" + profile, "about:blank"], pass_fds=(3, 4), preexec_fn=child,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for fd in (cmd_r, evt_w, cmd_r2, evt_w2): os.close(fd)
buf, next_id, deadline_all = b"", 0, time.time() + 150
def send(method, params=None, session=None):
    global buf, next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session: msg["sessionId"] = session
    os.write(cmd_w, json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buf:
            chunk = os.read(evt_r, 65536)
            if not chunk: raise SystemExit("chromium closed the pipe")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        m = json.loads(raw)
        if m.get("id") == next_id:
            if "error" in m: raise SystemExit("%s: %s" % (method, m["error"]))
            return m["result"]
def until(what, f, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        v = f()
        if v: return v
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what)
def api_get(path):
    with urllib.request.urlopen("http://" + api + path, timeout=10) as r: return json.loads(r.read())
try:
    target = next(t["targetId"] for t in send("Target.getTargets")["targetInfos"] if t["type"] == "page")
    session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    def js(expr):
        r = send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
        return r["result"].get("value")
    send("Page.navigate", {"url": page}, session)
    until("the first polls", lambda: int(js("document.body && document.body.getAttribute('data-polls') || 0")) >= 2)
    keys = ["received", "delivered", "deferrals", "bounced"]
    read_dom = "JSON.stringify({polls: +document.body.getAttribute('data-polls'), " + \
        ", ".join("%s: +document.getElementById('%s').textContent" % (k, k) for k in keys) + "})"
    samples = []
    for i in range(2):
        start = int(js("document.body.getAttribute('data-polls')"))
        before = api_get("/status")
        # The next poll after `before` was read: its figures are at least `before`'s.
        until("a new poll", lambda: int(js("document.body.getAttribute('data-polls')")) >= start + 2)
        dom = json.loads(js(read_dom))
        after = api_get("/status")
        samples.append({"before": {k: before[k] for k in keys}, "dom": dom, "after": {k: after[k] for k in keys}})
        if i == 0: time.sleep(2)
    button = "document.querySelector('button[data-action=pause][data-queue=\"%s\"]')" % queue
    until("the pause button", lambda: js("!!" + button))
    js(button + ".click()")
    action = until("the pause answer", lambda: js("document.body.getAttribute('data-last-action')"))
    paused = until("the API to say paused", lambda: next((q for q in api_get("/queues")["queues"]
                                                              if q["queue"] == queue and q["paused"]), None))
    mode = until("the page to say paused", lambda: js(
        "(function(){var r=document.querySelector('tr[data-queue=\"%s\"] td.mode');return r&&r.textContent==='paused'&&r.textContent})()" % queue))
    external = js("Array.from(document.querySelectorAll('script[src],link[href],img[src]')).length")
    print(json.dumps({"samples": samples, "action": action, "apiPaused": paused["paused"], "domMode": mode,
                      "externalAssets": external}))
finally:
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()
"""#

    @Test func monitorMovesMatchesTheAPIAndPausesAQueue() throws {
        let kind = try #require(BackendKind.testable.first)
        let chromium = try #require(HeadlessChromium.executable, "chromium is not installed (scripts/setup installs it)")
        let dir = try TestDirectory("monitor")
        let listen = E2E.ip(218, kind), mx = E2E.ip(218, kind, host: 1)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("a", domains: "a.test", mx: [mx]))
        defer { sink.terminate() }
        let (_, port) = try sink.address("a")
        let configPath = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <domain a.test>
                route [\(mx)]:\(port)
            </domain>
            """))
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        // The page itself: HTML, with a CSP that allows no other origin.
        let page = String(decoding: try E2E.httpGet(d.management, "/"), as: UTF8.self)
        #expect(page.contains("<title>Peregrine monitor</title>"))

        let loadgen = Process()
        loadgen.executableURL = URL(fileURLWithPath: E2E.executable("peregrine-loadgen"))
        loadgen.arguments = ["--target", "\(d.listenIP):\(d.listenPort)", "--duration", "60", "--rate", "100/s", "--connections", "4",
                             "--domains", "a.test=100", "--no-progress"]
        loadgen.standardOutput = FileHandle.nullDevice
        loadgen.standardError = FileHandle.nullDevice
        try ChildProcess.run(loadgen)
        defer { stopProcess(loadgen, grace: 5) }
        let flowing = E2E.waitUntil(30) { ((try? E2E.json(E2E.httpGet(d.management, "/status")))?["delivered"] as? Int ?? 0) > 0 }
        try #require(flowing, "no delivery under load: \(d.log.suffix(2000))")

        let token = try String(contentsOfFile: d.tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let profile = HeadlessChromium.scratch()
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let url = "http://\(d.management)/#token=\(token)"
        let (status, out) = runTool("/usr/bin/env", ["python3", "-c", Self.driver, chromium, url, d.management, "a.test/vmta1", profile],
                                    seconds: 200)
        try #require(status == 0, "driver: \(out)\n\(d.log.suffix(2000))")
        let line = try #require(out.split(separator: "\n").last { $0.hasPrefix("{") }, "no result: \(out)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let samples = try #require(result["samples"] as? [[String: [String: Int]]])
        try #require(samples.count == 2)
        for s in samples {
            for k in ["received", "delivered", "deferrals", "bounced"] {
                let before = s["before"]?[k] ?? -1, dom = s["dom"]?[k] ?? -2, after = s["after"]?[k] ?? -1
                #expect(before <= dom && dom <= after, "\(k): API before \(before), page \(dom), API after \(after)")
            }
        }
        // Under load the page's numbers move between the two samples.
        #expect((samples[1]["dom"]?["delivered"] ?? 0) > (samples[0]["dom"]?["delivered"] ?? 0), "\(samples)")
        #expect((samples[1]["dom"]?["received"] ?? 0) > (samples[0]["dom"]?["received"] ?? 0), "\(samples)")
        #expect((result["action"] as? String ?? "").hasPrefix("pause a.test/vmta1 200"), "\(result)")
        #expect(result["apiPaused"] as? Bool == true)
        #expect(result["domMode"] as? String == "paused")
        #expect(result["externalAssets"] as? Int == 0)
    }
}
