#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP
import PeregrineTLS

/// Drives the connections on one loop: grants messages at the configured
/// rate within the count/duration budget, builds each message, keeps score.
final class LoadGenerator<Loop: EventLoop> {
    let loop: Loop
    let options: LoadgenOptions
    /// The envelope sender's domain, for the List-Unsubscribe URIs.
    private let senderDomain: String
    let stats: LoadStats
    private var connections: [LoadConnection<Loop>] = []
    private var waiting: [LoadConnection<Loop>] = []
    private var issued = 0
    private var startedAt: UInt64 = 0
    private var deadline: UInt64 = .max
    private var nextSendAt: UInt64 = 0
    private var interval: UInt64 = 0
    private var grantTimer: TimerHandle?
    private var progressTimer: TimerHandle?
    private var rng: SeededRandom
    private var headerScratch: [UInt8] = []
    private var fillers: [Int: [UInt8]] = [:]
    private var domainTable: [(String, Double)]
    private var sizeTable: [(Int, Double)]
    private var activeConnections = 0
    private var consecutiveConnectFailures = 0
    /// Sessions in a row that failed (timeout, protocol error, lost): each
    /// doubles the pause before the reconnect, so a target that takes
    /// connections but not mail is not hammered.
    private var consecutiveSessionFailures = 0
    static var sessionBackoffCap: UInt64 { 5_000_000_000 }
    private(set) var finishedAt: UInt64 = 0
    private var showProgress: Bool

    /// `--starttls`: one client context for every connection (sessions resume on reconnect).
    let tlsContext: TLSContext?

    init(loop: Loop, options: LoadgenOptions) {
        self.loop = loop
        self.options = options
        self.senderDomain = options.sender.split(separator: "@").last.map(String.init) ?? "peregrine.test"
        self.tlsContext = options.startTLS ? (try? TLSContext.client()) : nil
        self.stats = LoadStats(expected: options.count ?? 100_000)
        self.stats.recordIDs = options.idsPath != nil || options.jsonPath != nil
        self.rng = SeededRandom(seed: options.seed)
        self.domainTable = Self.cumulative(options.domains)
        self.sizeTable = Self.cumulative(options.sizes)
        self.showProgress = options.progress ?? (isatty(STDERR_FILENO) != 0)
        if let r = options.rate { interval = UInt64(1_000_000_000 / r) }
        for (size, _) in options.sizes { fillers[size] = Self.filler(size) }
    }

    var isDone: Bool {
        if let c = options.count, issued >= c { return true }
        return loop.now >= deadline
    }

    var elapsedSeconds: Double {
        Double((finishedAt > 0 ? finishedAt : loop.now) - startedAt) / 1e9
    }

    func start() {
        startedAt = loop.now
        nextSendAt = startedAt
        if let d = options.duration { deadline = startedAt + UInt64(d * 1e9) }
        let n = options.count.map { min($0, options.connections) } ?? options.connections
        for _ in 0..<n {
            let c = LoadConnection(generator: self, loop: loop)
            connections.append(c)
            activeConnections += 1
            c.start()
        }
        if showProgress { scheduleProgress() }
        if deadline != .max {
            loop.scheduleTimer(after: deadline - startedAt + 1_000_000) { [unowned self] in self.dispatchGrants() }
        }
    }

    // MARK: Grants

    func requestGrant(_ c: LoadConnection<Loop>) {
        waiting.append(c)
        dispatchGrants()
    }

    func cancelGrantRequest(_ c: LoadConnection<Loop>) {
        waiting.removeAll { $0 === c }
    }

    func returnGrant() { issued -= 1 }

    private func dispatchGrants() {
        while !waiting.isEmpty {
            if isDone {
                // Budget spent: wake the waiting connections so they QUIT.
                let idle = waiting
                waiting.removeAll()
                for c in idle { c.budgetSpent() }
                return
            }
            if interval > 0 {
                let now = loop.now
                // Open loop: keep the schedule, but do not bank more than a second of missed slots.
                if nextSendAt + 1_000_000_000 < now { nextSendAt = now - 1_000_000_000 }
                if now < nextSendAt {
                    if grantTimer == nil {
                        grantTimer = loop.scheduleTimer(after: nextSendAt - now) { [unowned self] in
                            self.grantTimer = nil
                            self.dispatchGrants()
                        }
                    }
                    return
                }
                nextSendAt += interval
            }
            let c = waiting.removeFirst()
            issued += 1
            c.grant()
        }
    }

    // MARK: Messages

    func makeEnvelope() -> (SMTPClientEnvelope, String, Int) {
        let id = "\(options.runID)-\(issued)"
        var rcpts: [String] = []
        rcpts.reserveCapacity(options.recipientsPerMessage)
        for _ in 0..<options.recipientsPerMessage {
            let domain = Self.draw(domainTable, rng.unit())
            rcpts.append("u\(rng.next() % 100_000)@\(domain)")
        }
        let size = Self.draw(sizeTable, rng.unit())
        return (SMTPClientEnvelope(mailFrom: options.sender, recipients: rcpts, size: size), id, size)
    }

    /// Writes the message: a header block carrying the id and the send time, then filler up to `size`.
    func writeBody(id: String, size: Int, sentWall sentNanos: Int64, _ sink: (UnsafeRawBufferPointer) -> Void) {
        headerScratch.removeAll(keepingCapacity: true)
        func put(_ s: String) { var s = s; s.withUTF8 { headerScratch.append(contentsOf: $0) } }
        put("From: <\(options.sender)>\r\nTo: <undisclosed-recipients:;>\r\nSubject: Peregrine load test \(id)\r\n")
        put("Message-ID: <\(id)@loadgen.peregrine.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n")
        if options.listUnsubscribe {
            // RFC 8058 one-click: an https URI the receiver may POST to, plus the mailto most lists also give.
            put("List-Unsubscribe: <https://\(senderDomain)/unsubscribe/\(id)>, <mailto:unsubscribe@\(senderDomain)?subject=\(id)>\r\n")
            put("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        }
        put("X-Loadgen-Id: \(id)\r\nX-Loadgen-Sent: \(sentNanos)\r\n\r\n")
        headerScratch.withUnsafeBytes { sink($0) }
        if let filler = fillers[size] {
            let remaining = max(0, size - headerScratch.count)
            filler.withUnsafeBytes { sink(UnsafeRawBufferPointer(rebasing: $0[0..<min(remaining, $0.count)])) }
        }
    }

    func messageCompleted(id: String, started: UInt64, sentWall: Int64, reply: SMTPReply?, result: SMTPMessageResult) {
        let code = reply?.code ?? 0
        stats.byCode[code, default: 0] += 1
        if result.deliveredCount > 0 && reply?.isPositiveCompletion == true {
            stats.accepted += 1
            // "ID SENT-UNIX-NS": the benchmark pairs it with the sink's arrival time.
            if stats.recordIDs { stats.acceptedIDs.append("\(id) \(sentWall)") }
        } else if reply?.isPermanentFailure == true {
            stats.rejected += 1
        } else {
            stats.deferred += 1
        }
        let micros = (monotonicNanoseconds() - started) / 1000
        stats.latenciesMicros.append(UInt32(min(micros, UInt64(UInt32.max))))
    }

    // MARK: Connections

    func connectionEnded(_ c: LoadConnection<Loop>, failed: Bool, sessionFailed: Bool = false) {
        if failed { consecutiveConnectFailures += 1 } else { consecutiveConnectFailures = 0 }
        if sessionFailed { consecutiveSessionFailures += 1 } else if !failed { consecutiveSessionFailures = 0 }
        if !isDone {
            if consecutiveConnectFailures > 50 && stats.connectionsOpened == 0 {
                // The target never answered: give up with the error instead of spinning.
                finish()
                return
            }
            var delay: UInt64 = failed ? 100_000_000 : 0
            if sessionFailed {
                delay = min(100_000_000 << UInt64(min(consecutiveSessionFailures - 1, 10)), Self.sessionBackoffCap)
            }
            loop.scheduleTimer(after: delay) { c.start() }
            return
        }
        activeConnections -= 1
        if activeConnections == 0 { finish() }
    }

    private func finish() {
        guard finishedAt == 0 else { return }
        finishedAt = loop.now
        if let t = progressTimer { loop.cancelTimer(t) }
        if showProgress { printProgress(final: true) }
        loop.stop()
    }

    // MARK: Progress

    private func scheduleProgress() {
        progressTimer = loop.scheduleTimer(after: 500_000_000) { [unowned self] in
            self.printProgress(final: false)
            self.scheduleProgress()
        }
    }

    private func printProgress(final: Bool) {
        let e = max(elapsedSeconds, 0.001)
        let line = "sent \(stats.sent)  accepted \(stats.accepted)  deferred \(stats.deferred)  rejected \(stats.rejected)  "
            + "rate \(Int(Double(stats.accepted) / e))/s  elapsed \(String(format1(e)))s  conns \(activeConnections)"
        fputs("\r\u{1B}[K" + line + (final ? "\n" : ""), stderr)
    }

    // MARK: Helpers

    static func cumulative<T>(_ items: [(T, Double)]) -> [(T, Double)] {
        let total = items.reduce(0) { $0 + $1.1 }
        var acc = 0.0
        return items.map { acc += $0.1 / total; return ($0.0, acc) }
    }

    static func draw<T>(_ table: [(T, Double)], _ u: Double) -> T {
        for (v, c) in table where u < c { return v }
        return table[table.count - 1].0
    }

    static func filler(_ size: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(size)
        let line = Array("The quick brown fox jumps over the lazy dog; Peregrine load test filler text.".utf8)
        while out.count < size {
            out.append(contentsOf: line.prefix(max(0, size - out.count - 2)))
            out.append(13); out.append(10)
        }
        return out
    }
}

func format1(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

/// CLOCK_REALTIME in nanoseconds: the send timestamp carried in X-Loadgen-Sent.
func realtimeNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
