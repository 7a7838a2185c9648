import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import Synchronization

/// `peregrine-bench http-relay` (issue 16): HTTP clients → Peregrine's
/// `POST /api/v1/messages` → accept-all sink, durable spool, N recipients per
/// call (default 1, 10 and 100), per backend. In the same invocation and on
/// the same address, the SMTP relay (loadgen → Peregrine → sink, RelayRunner)
/// runs first: its delivered/s and CPU per message are the in-run reference.
///
/// The options are the relay scenario's (RelayBenchOptions: --backend,
/// --duration, --connections, --size, --ip, --output-dir, --no-results,
/// --drain-timeout) plus `--recipients 1,10,100`.
///
/// Reconciliation: every call answered 200 with all its recipients queued
/// carries an `X-Loadgen-Id`; each must reach the sink (its `--record-ids`
/// list), and the sink must have accepted every queued recipient.
struct HTTPRelayOptions {
    var relay: RelayBenchOptions
    var recipientCounts = [1, 10, 100]

    static let usage = """
    usage: peregrine-bench http-relay [--recipients 1,10,100] [relay options: --backend, --duration S,
                                      --connections N, --size BYTES, --drain-timeout S, --ip 127.X.Y.Z,
                                      --output-dir DIR, --no-results]
    Per backend: the SMTP relay (loadgen → MTA → sink) first, then HTTP API injection
    with each recipient count per call; both with a durable spool into the same sink.
    """

    static func parse(_ args: [String]) -> Result<HTTPRelayOptions, BenchUsageError> {
        var rest: [String] = []
        var counts: [Int]?
        var i = 0
        while i < args.count {
            if args[i] == "-h" || args[i] == "--help" { print(usage); exit(0) }
            if args[i] == "--recipients" {
                guard i + 1 < args.count else { return .failure(BenchUsageError("--recipients needs a list like 1,10,100")) }
                let parts = args[i + 1].split(separator: ",")
                let list = parts.compactMap { Int($0) }.filter { (1...1000).contains($0) }
                guard !list.isEmpty, list.count == parts.count else {
                    return .failure(BenchUsageError("--recipients needs counts from 1 to 1000 like 1,10,100"))
                }
                counts = list
                i += 2
                continue
            }
            rest.append(args[i])
            i += 1
        }
        switch RelayBenchOptions.parse(rest, scenario: "http-relay") {
        case .failure(let e): return .failure(BenchUsageError(e.message + "\n" + usage))
        case .success(var relay):
            relay.ceiling = false
            var o = HTTPRelayOptions(relay: relay)
            if let counts { o.recipientCounts = counts }
            return .success(o)
        }
    }
}

func runHTTPRelayBench(arguments: [String]) -> Int32 {
    let options: HTTPRelayOptions
    switch HTTPRelayOptions.parse(arguments) {
    case .success(let o): options = o
    case .failure(let m):
        fputs("peregrine-bench http-relay: \(m.message)\n", stderr)
        return 2
    }
    var failed = false
    var rows: [[String]] = []
    for kind in options.relay.backends {
        // The SMTP reference first: same machine, same minutes, same sink.
        var smtpOptions = options.relay
        smtpOptions.writeResults = false
        let smtpRunner = RelayRunner(options: smtpOptions, target: kind.rawValue)
        smtpRunner.scenarioName = "http-relay smtp"
        let smtp = smtpRunner.run()
        if let e = smtp.error { fputs("\(kind.rawValue) smtp: \(e)\n", stderr); failed = true }
        if smtp.lost > 0 { fputs("\(kind.rawValue) smtp: \(smtp.lost) lost\n", stderr); failed = true }
        var smtpSummary = smtp.peerSummary
        smtpSummary["scenario"] = "relay (loadgen → peregrine → sink, 1 recipient per message)"
        let smtpDelivered = smtp.figures["deliveredPerSecond"] as? Double
        let smtpCPU = (smtp.figures["mtaCpuSecondsPer10k"] as? Double).map { $0 * 100 }  // µs per message
        rows.append(["\(kind.rawValue) smtp", "1", fmt(smtp.figures["injectedPerSecond"] as? Double ?? 0, 0),
                     fmt(smtpDelivered ?? 0, 0), fmt(smtpCPU ?? 0, 1), "-", "\(smtp.lost)"])
        for n in options.recipientCounts {
            let runner = HTTPRelayRunner(options: options, backend: kind.rawValue, recipientsPerCall: n)
            runner.inRunSMTP = smtpSummary
            let r = runner.run()
            if let e = r.error { fputs("\(kind.rawValue) http r\(n): \(e)\n", stderr); failed = true }
            if r.lost > 0 { fputs("\(kind.rawValue) http r\(n): \(r.lost) accepted message(s) never reached the sink\n", stderr); failed = true }
            let f = r.figures
            rows.append(["\(kind.rawValue) http", "\(n)", fmt(f["recipientsAcceptedPerSecond"] as? Double ?? 0, 0),
                         fmt(f["recipientsDeliveredPerSecond"] as? Double ?? 0, 0),
                         fmt(f["mtaCpuMicrosecondsPerRecipient"] as? Double ?? 0, 1),
                         fmt(f["requestsPerSecond"] as? Double ?? 0, 0), "\(r.lost)"])
        }
    }
    printBenchTable(title: "http-relay: \(options.relay.messageSize) byte messages, \(options.relay.connections) clients, "
                    + "\(Int(options.relay.duration)) s per run, durable spool (rates are recipients/s; smtp: 1 per message)",
                    header: ["run", "rcpt/call", "accepted/s", "delivered/s", "MTA CPU µs/rcpt", "calls/s", "lost"], rows: rows)
    return failed ? 1 : 0
}

/// One HTTP run: sink, Peregrine with the API listener, the clients, the drain, the reconciliation.
final class HTTPRelayRunner {
    let options: HTTPRelayOptions
    let backend: String
    let recipientsPerCall: Int
    var inRunSMTP: [String: Any] = [:]
    let bin = BenchEnvironment.binDirectory()
    var ip: String { options.relay.ip }
    let ports = BenchNet.ports()
    let clock = RunClock()
    var work = ""
    var processes: [BenchProcess] = []
    static let keyName = "bench"
    static let keySecret = "bench-secret-0123456789"

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(options: HTTPRelayOptions, backend: String, recipientsPerCall: Int) {
        self.options = options
        self.backend = backend
        self.recipientsPerCall = recipientsPerCall
    }

    func run() -> RelayRun {
        var result = RelayRun(target: "\(backend)-r\(recipientsPerCall)")
        var chars = Array((NSTemporaryDirectory() + "peregrine-http-relay-XXXXXX").utf8CString)
        guard let made = mkdtemp(&chars) else { result.error = "mkdtemp failed"; return result }
        work = String(cString: made)
        defer {
            for p in processes.reversed() { p.stop(grace: 5) }
            if result.error != nil || result.lost > 0 || getenv("PEREGRINE_BENCH_KEEP") != nil {
                fputs("   kept \(work) (logs of this run)\n", stderr)
            } else {
                try? FileManager.default.removeItem(atPath: work)
            }
        }
        fputs("-- http-relay \(backend), \(recipientsPerCall) recipient(s) per call\n", stderr)
        do {
            result.figures = try measure(&result)
        } catch {
            result.error = "\(error)"
            return result
        }
        if options.relay.writeResults {
            var doc = result.figures
            doc["scenario"] = "http-relay"
            doc["target"] = result.target
            doc["backend"] = backend
            doc["timestamp"] = Int(Date().timeIntervalSince1970)
            doc["lost"] = result.lost
            doc["inRunPeers"] = ["smtp-relay": inRunSMTP]
            if let mine = result.figures["recipientsDeliveredPerSecond"] as? Double,
               let theirs = inRunSMTP["deliveredPerSecond"] as? Double, theirs > 0 {
                doc["recipientsDeliveredPerSecondOverSMTP"] = mine / theirs
            }
            // The [[label, value]] pairs results/README.md tabulates (ResultsSummary's default table).
            let f = result.figures
            func n(_ key: String, _ digits: Int = 0, in d: [String: Any]? = nil) -> String {
                ((d ?? f)[key] as? Double).map { fmt($0, digits) } ?? "-"
            }
            let smtpCPU = (inRunSMTP["mtaCpuSecondsPer10k"] as? Double).map { fmt($0 * 100, 1) } ?? "-"
            doc["summary"] = [["recipients per call", "\(recipientsPerCall)"], ["calls/s", n("requestsPerSecond")],
                              ["recipients accepted/s", n("recipientsAcceptedPerSecond")],
                              ["recipients delivered/s", n("recipientsDeliveredPerSecond")],
                              ["MTA CPU µs/recipient", n("mtaCpuMicrosecondsPerRecipient", 1)],
                              ["MTA CPU µs/call", n("mtaCpuMicrosecondsPerCall", 1)],
                              ["SMTP relay delivered/s (same run)", n("deliveredPerSecond", in: inRunSMTP)],
                              ["SMTP relay MTA CPU µs/msg (same run)", smtpCPU], ["lost", "\(result.lost)"]]
            clock.stamp(&doc)
            let path = BenchEnvironment.runResultPath(directory: options.relay.outputDir, scenario: "http-relay",
                                                      target: result.target, startedAt: clock.startedAt)
            if BenchEnvironment.writeJSON(doc, to: path) {
                fputs("   wrote \(path)\n", stderr)
                result.file = path
                _ = writeResultsSummary(directory: options.relay.outputDir)
            } else {
                fputs("cannot write \(path)\n", stderr)
            }
        }
        return result
    }

    /// `peregrine passwd` for the bench key (stdin: the secret).
    private func keyHash() throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin + "/peregrine")
        p.arguments = ["passwd", "--iterations", "100000"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = FileHandle.nullDevice
        try p.run()
        input.fileHandleForWriting.write(Data((Self.keySecret + "\n").utf8))
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("password-hash ") }) else {
            throw Failure(description: "peregrine passwd printed no hash: \(text)")
        }
        return String(line.dropFirst("password-hash ".count))
    }

    private func measure(_ result: inout RelayRun) throws -> [String: Any] {
        let sinkIDs = work + "/sink-ids.txt"
        let sink = BenchProcess(name: "sink", executable: bin + "/peregrine-sink",
                                arguments: ["--accept-all", "--listen", "\(ip):\(ports.sink)", "--record-ids", sinkIDs,
                                            "--stats-port", "\(ip):\(ports.stats)", "--backend", "epoll", "--quiet"],
                                logPath: work + "/sink.log")
        try sink.start(); processes.append(sink)
        guard BenchNet.waitForListener(ip: ip, port: ports.sink, timeout: 20) else {
            throw Failure(description: "sink did not start: \(sink.logTail)")
        }
        let apiPort = ports.mta
        let confText = """
            http-injection-listener \(ip):\(apiPort)
            smtp-listener \(ip):\(ports.mtaSMTP)
            http-injection-max-connections \(max(64, options.relay.connections * 2))
            http-mgmt-port \(ip):\(ports.mgmt)
            spool \(work)/spool
            host-name mta.peregrine.test
            threads \(options.relay.threads)
            <api-key \(Self.keyName)>
                key-hash \(try keyHash())
            </api-key>
            <acct-file \(work)/acct.csv>
                records d,b
            </acct-file>
            <domain *>
                route [\(ip)]:\(ports.sink)
                max-smtp-out 32
                max-msg-per-connection 0
            </domain>
            """
        let confPath = work + "/peregrine.conf"
        try confText.write(toFile: confPath, atomically: true, encoding: .utf8)
        let mta = BenchProcess(name: "peregrine", executable: bin + "/peregrine",
                               arguments: ["run", "--config", confPath, "--backend", backend], logPath: work + "/peregrine.log")
        try mta.start(); processes.append(mta)
        guard BenchNet.waitForListener(ip: ip, port: apiPort, timeout: 30) else {
            throw Failure(description: "peregrine did not start: \(mta.logTail)")
        }
        let mta0 = ProcessUsage.read(pid: mta.pid)?.cpuSeconds ?? 0
        let sink0 = ProcessUsage.read(pid: sink.pid)?.cpuSeconds ?? 0
        let self0 = HTTPRelayClients.ownCPUSeconds()

        let clients = HTTPRelayClients(ip: ip, port: apiPort, recipients: recipientsPerCall,
                                       messageSize: options.relay.messageSize,
                                       authorization: "Bearer \(Self.keyName):\(Self.keySecret)")
        let start = Date()
        var peakRSS = 0
        let outcome = clients.run(connections: options.relay.connections, duration: options.relay.duration) {
            peakRSS = max(peakRSS, ProcessUsage.read(pid: mta.pid)?.rssBytes ?? 0)
            if BenchProgress.enabled {
                let elapsed = Date().timeIntervalSince(start)
                BenchProgress.update("   http-relay \(self.backend) r\(self.recipientsPerCall): \(Int(elapsed))/"
                                     + "\(Int(self.options.relay.duration)) s")
            }
        }
        BenchProgress.finish()
        let injectSeconds = max(outcome.elapsedSeconds, 0.001)
        let clientCPU = HTTPRelayClients.ownCPUSeconds() - self0
        let acceptedMessages = outcome.acceptedIDs.count
        let acceptedRecipients = acceptedMessages * recipientsPerCall
        // Drain: the sink's recipient count reaches what the API queued.
        var delivered = 0
        var lastChange = Date(), lastDelivery = Date()
        let deadline = Date().addingTimeInterval(options.relay.drainTimeout)
        while Date() < deadline {
            let stats = BenchNet.getJSON(ip: ip, port: ports.stats, path: "/stats")
            let now = (stats?["totals"] as? [String: Any])?["recipients_accepted"] as? Int ?? delivered
            if now != delivered { delivered = now; lastChange = Date(); lastDelivery = Date() }
            peakRSS = max(peakRSS, ProcessUsage.read(pid: mta.pid)?.rssBytes ?? 0)
            if delivered >= acceptedRecipients || !mta.isRunning || Date().timeIntervalSince(lastChange) > 30 { break }
            usleep(100_000)
        }
        let mtaExit = mta.exitDescription
        let mtaCPU = (ProcessUsage.read(pid: mta.pid)?.cpuSeconds ?? mta0) - mta0
        let sinkCPU = (ProcessUsage.read(pid: sink.pid)?.cpuSeconds ?? sink0) - sink0
        mta.stop()
        sink.stop()  // writes the id list
        let seen = Set(ScenarioRig.ids(sinkIDs))
        result.lost = outcome.acceptedIDs.reduce(0) { $0 + (seen.contains($1) ? 0 : 1) }
        if result.lost == 0 && delivered < acceptedRecipients {
            // Every message arrived but not every recipient: count the recipients short as lost.
            result.lost = acceptedRecipients - delivered
        }
        if let mtaExit { result.error = "peregrine exited during the run (\(mtaExit)): \(mta.logTail)" }
        if acceptedMessages == 0 && result.error == nil {
            result.error = "no call was accepted: \(outcome.firstError ?? "?")"
        }
        let endToEnd = max(lastDelivery.timeIntervalSince(start), 0.001)
        var figures: [String: Any] = [
            "config": ["mta": "peregrine", "backend": backend, "threads": options.relay.threads, "config": confText],
            "recipientsPerCall": recipientsPerCall,
            "durationSeconds": options.relay.duration,
            "messageSize": options.relay.messageSize,
            "connections": options.relay.connections,
            "calls": outcome.calls,
            "callsAccepted": acceptedMessages,
            "callsFailed": outcome.calls - acceptedMessages,
            "recipientsAccepted": acceptedRecipients,
            "recipientsDeliveredAtSink": delivered,
            "transactionsAtSink": ScenarioRig.ids(sinkIDs).count,
            "requestsPerSecond": Double(acceptedMessages) / injectSeconds,
            "recipientsAcceptedPerSecond": Double(acceptedRecipients) / injectSeconds,
            "recipientsDeliveredPerSecond": Double(delivered) / endToEnd,
            "endToEndSeconds": endToEnd,
            "mtaCpuSeconds": mtaCPU,
            "mtaCpuMicrosecondsPerRecipient": delivered > 0 ? mtaCPU / Double(delivered) * 1e6 : 0,
            "mtaCpuMicrosecondsPerCall": acceptedMessages > 0 ? mtaCPU / Double(acceptedMessages) * 1e6 : 0,
            "mtaPeakRSSMB": Double(peakRSS) / 1_048_576,
            "sinkCpuPercent": sinkCPU / endToEnd * 100,
            "clientCpuPercent": clientCPU / injectSeconds * 100,
            "callLatencyMs": outcome.latencyPercentiles,
        ]
        if let e = outcome.firstError { figures["firstClientError"] = e }
        return figures
    }
}

/// The bench's HTTP/1.1 clients: one thread per keep-alive connection, each
/// POSTing one prebuilt request again and again with only its X-Loadgen-Id
/// rewritten in place (fixed width, so Content-Length never changes): no
/// Foundation and no allocation per request. A call counts as accepted when
/// it is answered 200 with every recipient queued.
final class HTTPRelayClients: @unchecked Sendable {
    let ip: String
    let port: UInt16
    let template: [UInt8]
    /// Where the id's digits sit in `template`.
    let idOffset: Int
    static let idDigits = 12
    let recipients: Int
    /// `"queued":N,` in a 200 body: every recipient was queued.
    let queuedMarker: [UInt8]
    /// Set at the end of the duration; each client finishes its call in flight and exits.
    let stopping = Atomic<Bool>(false)
    let running = Atomic<Int>(0)

    struct Outcome {
        var calls = 0
        var acceptedIDs: [String] = []
        var elapsedSeconds = 0.0
        var firstError: String?
        var latencyPercentiles: [String: Double] = [:]
    }

    init(ip: String, port: UInt16, recipients: Int, messageSize: Int, authorization: String) {
        self.ip = ip
        self.port = port
        self.recipients = recipients
        queuedMarker = Array("\"queued\":\(recipients),".utf8)
        let list = (0..<recipients).map { "\"r\($0)@bench.test\"" }.joined(separator: ",")
        // The raw message with JSON-escaped CRLFs; the body padded to about messageSize.
        let idPlaceholder = String(repeating: "0", count: 2 + Self.idDigits)
        var raw = "From: bench@bench.test\\r\\nTo: undisclosed-recipients:;\\r\\nSubject: http-relay\\r\\n"
            + "X-Loadgen-Id: "
        let idInRaw = raw.utf8.count
        raw += idPlaceholder + "\\r\\n\\r\\n"
        let line = String(repeating: "x", count: 76) + "\\r\\n"
        while raw.utf8.count + 78 < messageSize + messageSize / 32 { raw += line }
        let prefix = "{\"sender\":\"bench@bench.test\",\"recipients\":[\(list)],\"raw\":\""
        let body = prefix + raw + "\"}"
        let head = "POST /api/v1/messages HTTP/1.1\r\nHost: \(ip):\(port)\r\nAuthorization: \(authorization)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
        template = Array((head + body).utf8)
        idOffset = head.utf8.count + prefix.utf8.count + idInRaw
    }

    static func ownCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// Runs `connections` clients for `duration` seconds; `tick` runs every 200 ms on the calling thread.
    func run(connections: Int, duration: Double, tick: () -> Void) -> Outcome {
        let lock = NSLock()
        var outcome = Outcome()
        var latencies: [Double] = []
        running.store(connections, ordering: .releasing)
        let start = DispatchTime.now().uptimeNanoseconds
        for c in 0..<connections {
            let t = Thread { [self] in
                let r = self.client(number: c)
                lock.withLock {
                    outcome.calls += r.calls
                    outcome.acceptedIDs += r.ids
                    latencies += r.latencies
                    if outcome.firstError == nil { outcome.firstError = r.error }
                }
                running.subtract(1, ordering: .releasing)
            }
            t.stackSize = 1 << 20
            t.start()
        }
        let deadline = Date().addingTimeInterval(duration)
        while Date() < deadline && running.load(ordering: .acquiring) > 0 { usleep(200_000); tick() }
        stopping.store(true, ordering: .releasing)
        outcome.elapsedSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // Calls in flight get their answer (each is at most one request); bounded by the socket timeout.
        while running.load(ordering: .acquiring) > 0 { usleep(20_000) }
        latencies.sort()
        func pct(_ p: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p / 100))] }
        outcome.latencyPercentiles = ["p50": pct(50), "p90": pct(90), "p99": pct(99), "max": latencies.last ?? 0]
        return outcome
    }

    private struct ClientResult { var calls = 0; var ids: [String] = []; var latencies: [Double] = []; var error: String? }

    private func connect() -> Int32? {
        BenchNet.connectedSocket(ip: ip, port: port) { fd in
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var timeout = timeval(tv_sec: 60, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    private func client(number: Int) -> ClientResult {
        var r = ClientResult()
        var request = template
        var response = [UInt8](repeating: 0, count: 64 * 1024)
        var fd: Int32 = -1
        var sequence = 0
        defer { if fd >= 0 { close(fd) } }
        while !stopping.load(ordering: .acquiring) {
            if fd < 0 {
                guard let f = connect() else { r.error = r.error ?? "connect failed: errno \(errno)"; usleep(100_000); continue }
                fd = f
            }
            // The id: "h" + client number (3 digits) + sequence, as fixed-width decimal.
            sequence += 1
            var value = number * 1_000_000_000 + sequence
            request[idOffset] = UInt8(ascii: "h")
            request[idOffset + 1] = UInt8(ascii: "-")
            for i in stride(from: Self.idDigits - 1, through: 0, by: -1) {
                request[idOffset + 2 + i] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
            let sent = DispatchTime.now().uptimeNanoseconds
            let ok = request.withUnsafeBytes { buf -> Bool in
                var off = 0
                while off < buf.count {
                    let n = write(fd, buf.baseAddress! + off, buf.count - off)
                    if n <= 0 { return false }
                    off += n
                }
                return true
            }
            r.calls += 1
            guard ok, let answer = readResponse(fd, &response) else {
                r.error = r.error ?? "connection lost (errno \(errno))"
                close(fd); fd = -1
                continue
            }
            let (status, accepted) = answer
            r.latencies.append(Double(DispatchTime.now().uptimeNanoseconds - sent) / 1e6)
            if status == 200 && accepted {
                r.ids.append(String(decoding: request[idOffset..<(idOffset + 2 + Self.idDigits)], as: UTF8.self))
            } else if r.error == nil {
                r.error = "HTTP \(status)"
            }
        }
        return r
    }

    /// Reads one response (head, then Content-Length bytes) into `buffer`: the status and whether every recipient was queued.
    private func readResponse(_ fd: Int32, _ buffer: inout [UInt8]) -> (Int, Bool)? {
        var used = 0
        var headEnd = -1
        var contentLength = 0
        while true {
            if used == buffer.count { return nil }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + used, $0.count - used) }
            if n <= 0 { return nil }
            used += n
            if headEnd < 0 {
                guard let end = Self.find([13, 10, 13, 10], in: buffer, upTo: used) else { continue }
                headEnd = end + 4
                contentLength = Self.contentLength(buffer, upTo: headEnd)
            }
            if used >= headEnd + contentLength { break }
        }
        // "HTTP/1.1 200 ..."
        guard used > 12 else { return nil }
        let status = Int(buffer[9] &- 48) * 100 + Int(buffer[10] &- 48) * 10 + Int(buffer[11] &- 48)
        let accepted = Self.find(queuedMarker, in: buffer, from: headEnd, upTo: headEnd + contentLength) != nil
        return (status, accepted)
    }

    static func find(_ needle: [UInt8], in buffer: [UInt8], from: Int = 0, upTo end: Int) -> Int? {
        guard end - from >= needle.count else { return nil }
        var i = from
        while i + needle.count <= end {
            if buffer[i] == needle[0] {
                var j = 1
                while j < needle.count && buffer[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    /// The Content-Length header's value (case-insensitive name), 0 when absent.
    static func contentLength(_ buffer: [UInt8], upTo end: Int) -> Int {
        let name = Array("\r\ncontent-length:".utf8)
        var i = 0
        outer: while i + name.count < end {
            for j in 0..<name.count {
                var b = buffer[i + j]
                if b >= 65 && b <= 90 { b += 32 }
                if b != name[j] { i += 1; continue outer }
            }
            var k = i + name.count, v = 0
            while k < end && buffer[k] == 32 { k += 1 }
            while k < end, buffer[k] >= 48, buffer[k] <= 57 { v = v * 10 + Int(buffer[k] - 48); k += 1 }
            return v
        }
        return 0
    }
}
