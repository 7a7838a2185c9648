#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineTLS
import PeregrineSpool
import PeregrineAccounting

/// Delivers one `<webhook>`'s events, in log order, on its own thread
/// (blocking I/O is fine here: this is not a delivery loop, and each webhook
/// has exactly one request in flight).
///
/// A batch is the next up to `max-batch-events` subscribed events after the
/// cursor; a partial batch waits until its first event is `max-batch-delay`
/// old. A 2xx answer acknowledges the batch: the cursor moves past it and is
/// written (`cursor-NAME`, fsynced, renamed) before the next batch. Anything
/// else (3xx-5xx, refused, timeout, TLS or protocol failure) is retried, the
/// same events first, after an exponential backoff with jitter
/// (`retry-initial-delay` doubling to `retry-max-delay`, each wait drawn
/// between half and all of it). Events at the head older than
/// `webhook-max-age` are written to accounting as `w` records and passed.
///
/// Signature header (when `secret` is set):
/// `Peregrine-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
/// A receiver recomputes it over the raw body and refuses stale `t` (replays).
final class WebhookSender: @unchecked Sendable {
    struct Stats: Sendable {
        var cursor: WebhookEventLog.Position
        var cursorSequence: UInt64
        var sent: UInt64 = 0
        var batches: UInt64 = 0
        var failures: UInt64 = 0
        var expired: UInt64 = 0
        var lastError: String?
        var lastErrorTime: Int64?
        /// Wall time (ms) of the oldest event not yet acknowledged; nil when none waits.
        var oldestPendingMillis: Int64?
    }

    let settings: WebhookSettings
    let log: WebhookEventLog
    let maxAgeMillis: Int64
    let cursorPath: String
    private let accounting: AccountingLog
    private let daemonLog: @Sendable (String) -> Void
    private let cursorMoved: @Sendable () -> Void
    private let client: WebhookHTTPClient
    let stats: Locked<Stats>
    private let sleeper = NSCondition()
    private var stopping = false  // guarded by sleeper
    private let finished = DispatchSemaphore(value: 0)

    /// `startAtEnd`: without a saved cursor, begin at the log's durable end
    /// (a webhook added on reload) rather than its oldest segment (start-up).
    init(settings: WebhookSettings, log: WebhookEventLog, maxAge: Duration, accounting: AccountingLog,
         daemonLog: @escaping @Sendable (String) -> Void, startAtEnd: Bool = false,
         cursorMoved: @escaping @Sendable () -> Void) throws {
        self.settings = settings
        self.log = log
        self.maxAgeMillis = maxAge.components.seconds * 1000 + maxAge.components.attoseconds / 1_000_000_000_000_000
        self.cursorPath = log.directory + "/cursor-" + settings.name
        self.accounting = accounting
        self.daemonLog = daemonLog
        self.cursorMoved = cursorMoved
        var tlsContext: TLSContext?
        if settings.url.scheme == .https {
            tlsContext = try TLSContext.client(trustStore: settings.caFile.map { .file($0) } ?? .system)
        }
        client = WebhookHTTPClient(url: settings.url, tlsContext: tlsContext)
        let saved = Self.readCursor(cursorPath)
        if saved == nil && startAtEnd {
            let (end, sequence) = log.durableEnd
            stats = Locked(Stats(cursor: end, cursorSequence: sequence))
            writeCursor(end, sequence: sequence)
        } else {
            stats = Locked(Stats(cursor: saved?.0 ?? WebhookEventLog.Position(segment: log.oldestSegment, offset: 0),
                                 cursorSequence: saved?.1 ?? 0))
        }
    }

    func start() {
        let t = Thread { [self] in
            self.run()
            self.finished.signal()
        }
        t.name = "peregrine-webhook-\(settings.name)"
        t.start()
    }

    /// Asks the thread to stop and waits for it (at most one request timeout plus a second).
    func stop() {
        sleeper.lock(); stopping = true; sleeper.broadcast(); sleeper.unlock()
        log.wakeAll()
        _ = finished.wait(timeout: .now() + .nanoseconds(Int(nanoseconds(settings.timeout))) + .seconds(1))
    }

    private var isStopping: Bool { sleeper.lock(); defer { sleeper.unlock() }; return stopping }

    // MARK: Cursor file

    /// `segment offset sequence crc32c` in text, one line (readable with cat).
    static func readCursor(_ path: String) -> (WebhookEventLog.Position, UInt64)? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 4, let seg = UInt64(parts[0]), let off = UInt64(parts[1]), let seq = UInt64(parts[2]),
              let crc = UInt32(parts[3]), CRC32C.checksum(Array("\(seg) \(off) \(seq)".utf8)) == crc else { return nil }
        return (WebhookEventLog.Position(segment: seg, offset: off), seq)
    }

    private func writeCursor(_ p: WebhookEventLog.Position, sequence: UInt64) {
        let body = "\(p.segment) \(p.offset) \(sequence)"
        let line = body + " \(CRC32C.checksum(Array(body.utf8)))\n"
        let tmp = cursorPath + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var ok = fd >= 0
        if ok {
            var written = 0
            ok = Array(line.utf8).withUnsafeBytes { Posix.writeAll(fd, $0, written: &written) } == nil && fsync(fd) == 0
            close(fd)
        }
        if ok { ok = rename(tmp, cursorPath) == 0 }
        if ok { WebhookEventLog.syncDirectory(log.directory) }
        if !ok {
            // The acknowledged batch would be sent again after a restart (duplicates are allowed; losses are not).
            daemonLog("webhook \(settings.name): cannot write \(cursorPath): \(String(cString: strerror(errno)))")
        }
    }

    private func advance(to p: WebhookEventLog.Position, sequence: UInt64) {
        stats.withLock { $0.cursor = p; $0.cursorSequence = sequence }
        writeCursor(p, sequence: sequence)
        cursorMoved()
    }

    // MARK: The thread

    private func run() {
        let reader = WebhookEventLogReader(log: log)
        var backoff = nanoseconds(settings.retryInitialDelay)
        var failing = false
        let maxEvents = settings.maxBatchEvents
        let delayMillis = Int64(nanoseconds(settings.maxBatchDelay) / 1_000_000)
        while !isStopping {
            let (durableEnd, _) = log.durableEnd
            let start = stats.withLock { $0.cursor }
            var position = start
            var passed = start, passedSequence: UInt64?
            var batch: [WebhookEventLog.Record] = []
            var expired: [WebhookEventLog.Record] = []
            let now = wallMillis()
            while batch.count < maxEvents, let r = reader.next(&position, durableEnd: durableEnd) {
                guard let type = r.type, settings.events.contains(type) else {
                    if batch.isEmpty { passed = r.end; passedSequence = r.sequence }
                    continue
                }
                if batch.isEmpty && now - r.timeMillis > maxAgeMillis {
                    expired.append(r); passed = r.end; passedSequence = r.sequence
                    if expired.count >= maxEvents { break }
                    continue
                }
                batch.append(r)
            }
            if !expired.isEmpty {
                for r in expired { recordUndeliverable(r) }
                stats.withLock { $0.expired += UInt64(expired.count) }
            }
            if let seq = passedSequence, passed > start, batch.isEmpty || !expired.isEmpty {
                advance(to: passed, sequence: seq)
            }
            guard let head = batch.first, let last = batch.last else {
                stats.withLock { $0.oldestPendingMillis = nil }
                if expired.isEmpty {
                    _ = log.waitForData(after: position, deadline: monotonicNanoseconds() + 1_000_000_000)
                }
                continue
            }
            stats.withLock { $0.oldestPendingMillis = head.timeMillis }
            if batch.count < maxEvents, now - head.timeMillis < delayMillis {
                // A partial batch waits for more events, at most until its first one is max-batch-delay old.
                let wait = UInt64(delayMillis - (now - head.timeMillis)) * 1_000_000
                _ = log.waitForData(after: position, deadline: monotonicNanoseconds() + wait)
                if log.durableEnd.0 > position { continue }  // more arrived: rebuild the batch
                if isStopping { break }
            }
            var body: [UInt8] = [UInt8(ascii: "[")]
            for (i, r) in batch.enumerated() {
                if i > 0 { body.append(UInt8(ascii: ",")) }
                body += r.json
            }
            body.append(UInt8(ascii: "]"))
            var headers = [("Peregrine-Webhook", settings.name), ("Peregrine-Event-Count", String(batch.count))]
            if let secret = settings.secret {
                let t = String(wallMillis() / 1000)
                headers.append(("Peregrine-Signature", "t=\(t),v1=" + HMACSHA256.hex(key: secret, message: Array((t + ".").utf8) + body)))
            }
            let error: String?
            do {
                let status = try client.post(body: body, headers: headers, timeoutNanoseconds: nanoseconds(settings.timeout))
                error = (200...299).contains(status) ? nil : "HTTP \(status)"
            } catch let e {
                error = e.description
            }
            if let error {
                stats.withLock { $0.failures += 1; $0.lastError = error; $0.lastErrorTime = wallMillis() / 1000 }
                if !failing { daemonLog("webhook \(settings.name): \(settings.url): \(error); retrying with backoff") }
                failing = true
                let jittered = backoff / 2 + UInt64.random(in: 0...(backoff / 2))
                sleep(nanoseconds: jittered)
                backoff = min(backoff * 2, nanoseconds(settings.retryMaxDelay))
                continue
            }
            if failing { daemonLog("webhook \(settings.name): \(settings.url) acknowledged again") }
            failing = false
            backoff = nanoseconds(settings.retryInitialDelay)
            stats.withLock { $0.sent += UInt64(batch.count); $0.batches += 1 }
            advance(to: last.end, sequence: last.sequence)
        }
        client.disconnect()
    }

    /// Interruptible sleep (stop wakes it).
    private func sleep(nanoseconds n: UInt64) {
        sleeper.lock()
        let until = Date(timeIntervalSinceNow: Double(n) / 1e9)
        while !stopping && Date() < until { _ = sleeper.wait(until: until) }
        sleeper.unlock()
    }

    private func recordUndeliverable(_ r: WebhookEventLog.Record) {
        let last = stats.withLock { $0.lastError } ?? "not acknowledged"
        let json = (try? JSONSerialization.jsonObject(with: Data(r.json))) as? [String: Any] ?? [:]
        let id = json["id"] as? String ?? "seq \(r.sequence)"
        let type = r.type?.name ?? "unknown"
        accounting.log(AccountingRecord(
            type: .webhookUndeliverable, timeLogged: wallMillis() / 1000, timeQueued: r.timeMillis / 1000,
            orig: json["sender"] as? String ?? "", rcpt: json["recipient"] as? String ?? "",
            dsnAction: "failed", dsnDiag: "webhook \(settings.name): \(type) event \(id) undeliverable after "
                + "webhook-max-age (last error: \(last))",
            dsnMta: settings.name, bounceCat: "webhook-undeliverable",
            vmta: json["vmta"] as? String ?? "", jobId: json["job_id"] as? String ?? "", envId: id))
        daemonLog("webhook \(settings.name): \(type) event \(id) older than webhook-max-age: written to accounting (w) and passed")
    }
}

func nanoseconds(_ d: Duration) -> UInt64 {
    let c = d.components
    return UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds / 1_000_000_000))
}

func wallMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
