#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Dispatch
import PeregrineIO
import PeregrineSMTP
import PeregrineTLS
import PeregrineConfig
import PeregrineHTTP
import PeregrineSpool
import PeregrineAccounting
import PeregrineEngine
import PeregrineRedis

/// The `peregrine run` daemon: recovers the spool, starts one worker per
/// thread (each owning an event loop of the chosen backend), listens, delivers,
/// serves the management API, and shuts down cleanly on SIGTERM.
public final class Daemon<Loop: EventLoop> {
    public struct Options: Sendable {
        public var configPath: String
        public var threads: Int
        public var log: @Sendable (String) -> Void = { fputs("peregrine: \($0)\n", stderr) }
        public init(configPath: String, threads: Int) { self.configPath = configPath; self.threads = threads }
    }

    public let options: Options
    public private(set) var config: PeregrineConfig
    public let accounting: AccountingLog
    /// `<webhook>` delivery (Webhooks/); nil without a `<webhook>` block.
    var webhooks: WebhookService?
    /// `log-file`: every daemon line also goes there, with a timestamp; nil without one.
    /// Opened at start-up (as root, before a privilege drop); a reload keeps it.
    public let logFile: DaemonLogFile?
    public let hostName: String
    /// STARTTLS / implicit TLS on injection (`smtp-server-tls-certificate`); nil: none.
    /// Rebuilt from the files on reload; each worker holds its own copy of the
    /// reference (see `LoopWorker.serverTLSContext`), so connections never
    /// take this lock.
    public var serverTLSContext: TLSContext? { lock.withLock { currentServerTLSContext } }
    /// `config` read under the lock, for readers on a loop thread (reload may run on another).
    var currentConfig: PeregrineConfig { lock.withLock { config } }
    private var currentServerTLSContext: TLSContext?
    /// The `tls=yes` listeners started with (listeners keep their start-up values).
    let implicitTLSListeners: [SocketAddress]
    /// `http-injection-listener … tls=yes` as started (HTTPInjection/HTTPInjectionTLS.swift).
    let httpInjectionTLSListener: SocketAddress?
    /// STARTTLS on delivery: one client context for every loop (session resumption per MX).
    public let clientTLSContext: TLSContext?
    /// total-max-smtp-out and VMTA max-smtp-out, shared by every loop (ConnectionBudget.swift).
    let connectionBudgets = ConnectionBudgets()
    /// Today's `max-cold-virtual-mta-msg` counts, shared by every loop.
    let coldVMTAQuota = ColdVMTAQuota()
    /// `max-queued-in-memory`: recipients held by the engines, shared by every loop.
    let paging = QueuePaging()
    public private(set) var workers: [LoopWorker<Loop>] = []
    /// Inbound SMTP connection counts shared by every loop (`max-smtp-in`).
    let inboundLimits = InboundConnectionLimits()
    /// SMTP AUTH credential checks and the per-address failure table, shared by every loop.
    let smtpAuth = SMTPAuthenticator()
    /// `max-msg-rate` of `<source>` blocks, shared by every loop.
    let sourceRates = SourceRateLimits()
    /// `<api-key>` max-msg-rate (HTTPInjectionServer.swift).
    let apiKeyRates = APIKeyRateLimits()
    /// Host/Origin/token checks of the management API; the token is read
    /// (or created) at start-up from `http-mgmt-token-file`. Used on worker 0's loop only.
    var managementGuard = ManagementRequestGuard(token: nil)
    /// The cluster's shared state (cluster-redis), on worker 0's loop; nil: not a cluster (Daemon+Cluster.swift).
    var cluster: RedisClusterCoordinator<Loop>?
    /// Recipients sent their delay notice (DelayNoticeMarks.swift): loaded from the
    /// spool in `run()` before any loop reads it.
    private(set) var delayNoticeMarks = DelayNoticeMarks()
    /// The suppression list (Daemon+Suppression.swift): set once in `run()` before any loop reads it.
    var suppression: SuppressionList?
    private var loopGroup: LoopGroup<Loop>?
    private var management: ManagementServer<Loop>?
    private let startedAt = monotonicNanoseconds()
    private var shuttingDown = false
    /// Shutdown has begun: set before "shutting down" is logged, while each loop
    /// learns it later (`LoopWorker.isShuttingDown`), so the API can refuse a
    /// request that arrives in between. Thread-safe.
    var isShuttingDown: Bool { lock.withLock { shuttingDown } }
    /// A loop stopped without a shutdown (see `loopReturned`): the exit status is 1.
    private var loopFailed = false
    /// The shutdown deadline passed or a second signal came: deliveries are abandoned.
    private var forcing = false
    private let exited = DispatchSemaphore(value: 0)
    private var pendingStops = 0
    /// Loops that finished shutdown phase 1 (see `shutdown`); the spools are
    /// flushed once every loop is here or in `deadLoops`.
    private var drainedLoops: Set<Int> = []
    /// Phase 2 (flush and stop) was posted.
    private var flushPosted = false
    /// Loops whose `run()` returned without being asked (`loopReturned`): they
    /// run no more work, so shutdown neither waits for their drain nor posts
    /// them a flush (which would never run and hold the exit until the
    /// forced-stop `_exit`, with the live loops' spools unflushed).
    private var deadLoops: Set<Int> = []
    /// Loops the daemon asked to stop (their return is expected).
    private var stopsAsked: Set<Int> = []
    private let lock = Locked<Void>()
    /// One reload at a time (SIGHUP and POST /reload may race), so every loop
    /// receives the reloads in the same order.
    private let reloadLock = Locked<Void>()

    public init(config: PeregrineConfig, options: Options) throws {
        self.config = config
        self.options = options
        paging.setLimit(config.maxQueuedInMemory)
        self.hostName = config.hostName ?? ConfigPolicySource.systemHostName()
        self.currentServerTLSContext = try config.serverTLS?.makeContext()
        self.implicitTLSListeners = config.implicitTLSListeners
        self.httpInjectionTLSListener = config.httpInjection.tls ? config.httpInjection.listener : nil
        // System CAs so `tls-verify-hostname yes` can verify; without them, no verification.
        self.clientTLSContext = (try? TLSContext.client(trustStore: .system)) ?? (try? TLSContext.client())
        var writers: [AccountingWriter] = []
        for file in config.accountingFiles {
            writers.append(try AccountingWriter(options: file))
        }
        self.accounting = AccountingLog(writers: writers)
        if let o = config.runtime.logFile {
            let file = try DaemonLogFile(options: o)
            // The log cannot report its own failures: they go to stderr.
            file.onError = { [log = options.log] in log("log-file: \($0)") }
            logFile = file
        } else {
            logFile = nil
        }
    }

    /// A daemon event: on stderr and in the log file.
    func log(_ line: String) {
        options.log(line)
        logFile?.write(line)
    }

    /// A detail only the log file takes (`log-connections`, `log-commands`,
    /// `log-data`): too many for stderr. No-op without a log file.
    func logDetail(_ line: String) { logFile?.write(line) }

    // MARK: Sharding

    /// The worker that owns a queue: a stable hash of its name, so a queue's
    /// throttles live on exactly one loop. A rolled-up queue (mx-rollup) is
    /// hashed by its VMTA alone: its MX site is only known after DNS, and every
    /// queue that may share a site must live on the loop that owns the site.
    /// `asking` is the worker calling (its policy cache answers mx-rollup).
    func owner(of key: QueueKey, asking: LoopWorker<Loop>) -> LoopWorker<Loop> {
        guard workers.count > 1 else { return workers[0] }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        // A pooled VMTA's queues for a domain share a loop with the other
        // members' (disable-source-ip moves mail between them on that loop).
        let vmtaGroup = asking.policies.pool(ofVMTA: key.vmta).map { "pool:\($0.name)" } ?? key.vmta
        let name = asking.policies.policy(for: key).mxRollup ? "mx-rollup/\(vmtaGroup)" : "\(key.domain)/\(vmtaGroup)"
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return workers[Int(h % UInt64(workers.count))]
    }

    func worker(forStream stream: Int) -> LoopWorker<Loop> { workers[stream % workers.count] }

    /// Hands a durable message's recipients to the workers owning their queues
    /// (called on `caller`'s loop, the loop of the message's spool stream).
    func dispatch(_ message: QueuedMessage, from caller: LoopWorker<Loop>) {
        var byOwner: [Int: [Int]] = [:]
        paging.dispatched(message.pendingCount)
        let recipients = message.recipients
        for i in recipients.indices where message.states[i] == .pending {
            // queue-to: the loop that owns the queue the recipient goes to (DeliveryEngine.submit maps it the same way).
            let key = QueueKey(domain: caller.policies.queueDomain(for: recipients.domain(i), vmta: message.vmta),
                               vmta: message.vmta)
            byOwner[owner(of: key, asking: caller).index, default: []].append(i)
        }
        for (ownerIndex, rcpts) in byOwner {
            let w = workers[ownerIndex]
            // Each owner gets its own copy: a message object is only ever touched by one loop.
            let part = byOwner.count == 1 ? message : message.part(keeping: rcpts)
            // Callers run on the loop of the message's spool stream.
            if w === worker(forStream: message.stream) {
                w.engine.submit(part, recipients: rcpts, vmta: part.vmta)
            } else {
                w.loop.execute { w.engine.submit(part, recipients: rcpts, vmta: part.vmta) }
            }
        }
    }

    // MARK: Running

    /// Runs until SIGTERM/SIGINT; returns the exit status.
    public func run() -> Int32 {
        Posix.ignoreSIGPIPE()
        // Before any connection can use up the descriptors libdispatch needs (DispatchWarmUp says why).
        DispatchWarmUp.now()
        log("starting (pid \(getpid()), config \(options.configPath))")
        defer { logFile?.close() }
        for warning in config.warnings { log("warning: \(warning)") }
        let testFault: DaemonTestFault?
        switch DaemonTestFault.fromEnvironment() {
        case .success(let f): testFault = f
        case .failure(let unknown): log("\(unknown)"); return 1
        }
        guard case .success(let privileges) = planPrivileges() else { return 1 }
        let spoolDir = config.spoolPath
        do {
            try FileManager.default.createDirectory(atPath: spoolDir, withIntermediateDirectories: true)
        } catch {
            log("cannot create spool directory \(spoolDir): \(error)")
            return 1
        }
        if config.httpManagement != nil {
            do {
                let token = try ManagementToken.loadOrCreate(path: config.managementTokenPath)
                managementGuard = ManagementRequestGuard(allowedHosts: Set([hostName] + (config.httpManagement.map { [$0.ip] } ?? [])),
                                                         token: token)
            } catch {
                log("\(error)")
                return 1
            }
        }
        guard openSuppressionList() else { return 1 }
        let recovered: [SpoolStreamRecovery]
        switch SpoolRecovery.recoverAll(spoolDirectory: spoolDir, log: { [self] in log("spool: \($0)") }) {
        case .success(let r):
            recovered = r
            for stream in r where !stream.problems.isEmpty {
                log("spool: \(stream.directory): \(stream.problems.count) problem(s) found at start-up (listed above; "
                    + "quarantined files are in \(SpoolRecovery.quarantineDirectory(stream: stream.directory)))")
            }
        case .failure(let e):
            log("spool recovery failed: \(e)")
            return 1
        }
        delayNoticeMarks = DelayNoticeMarks(spoolDirectory: spoolDir, live: Set(recovered.flatMap { $0.messages.map(\.id) }),
                                            report: { [self] in log($0) })
        guard startWebhooks() else { return 1 }
        let n = max(1, options.threads)
        let group: LoopGroup<Loop>
        do {
            group = try LoopGroup(count: n, name: "loop") { [self] i in self.loopReturned(i) }
        } catch {
            log("\(error)")
            return 1
        }
        loopGroup = group
        let created = group.loops
        connectionBudgets.configure(config)
        workers = created.enumerated().map { i, l in LoopWorker(index: i, loop: l, daemon: self, config: config,
                                                                serverTLSContext: currentServerTLSContext) }
        pendingStops = workers.count

        // Set up each worker on its own loop, then wait for all of them.
        let setupDone = DispatchSemaphore(value: 0)
        let setupErrors = Locked<[String]>([])
        let streamsByWorker = Dictionary(grouping: recovered.indices) { streamIndex(of: recovered[$0]) % n }
        for w in workers {
            let mine = streamsByWorker[w.index] ?? []
            w.loop.execute { [self] in
                do {
                    try self.setUp(w, recovered: mine.map { recovered[$0] })
                } catch {
                    setupErrors.withLock { $0.append("loop \(w.index): \(error)") }
                }
                setupDone.signal()
            }
        }
        for _ in workers { setupDone.wait() }
        let setupFailures = setupErrors.withLock { $0 }
        if !setupFailures.isEmpty {
            for e in setupFailures { log(e) }
            stopLoops()
            return 1
        }
        // Listeners bound and files open as root: now run-as-user (Daemon+Privileges.swift).
        if let privileges, !dropPrivileges(privileges) {
            stopLoops()
            return 1
        }
        // Cluster limits first: each loop runs the hand-offs in order, so the
        // recovered mail's first connections already ask for leases.
        startCluster()
        // Re-queue what the spool still holds, now that every engine exists.
        for w in workers {
            w.loop.execute { [self] in self.requeueRecovered(on: w, recovered: recovered) }
        }
        guard installSignalHandlers() else {
            stopLoops()
            return 1
        }
        let addresses = workers.first?.listenerAddresses.map(\.description).joined(separator: ", ") ?? ""
        var line = "running: backend \(Loop.kind), \(workers.count) loop(s), listening on \(addresses)"
        if let m = management?.boundAddress { line += ", management on \(m)" }
        log(line)
        if let api = workers.first?.httpInjection?.boundAddress { log("http injection API listening on \(api)") }
        if let testFault { inject(testFault) }
        exited.wait()
        webhooks?.stop()
        accounting.close()
        // Changes from the last bounces and reports, made durable before exit.
        suppression?.waitUntilDurable()
        let failed = lock.withLock { loopFailed }
        log(failed ? "stopped after a loop failed (exit status 1)" : "stopped")
        return failed ? 1 : 0
    }

    /// A loop's `run()` returned. Expected once shutdown asked it to stop;
    /// before that (a backend that cannot go on, e.g. io_uring refusing its
    /// thread) the daemon cannot serve that loop's queues and connections:
    /// it says so and shuts down (bounded by `shutdown-timeout`), exiting 1,
    /// rather than running on half-dead or vanishing without a word.
    private func loopReturned(_ index: Int) {
        // nil: asked to stop; else whether shutdown had begun already.
        let unexpected = lock.withLock { () -> Bool? in
            if stopsAsked.contains(index) { return nil }
            loopFailed = true
            deadLoops.insert(index)
            return shuttingDown
        }
        switch unexpected {
        case false?:
            log("loop \(index) stopped without a shutdown (its \(Loop.kind) backend returned from run()); shutting down")
            DispatchQueue.global().async { [self] in shutdown(reason: "loop \(index) failed") }
        case true?:
            // Mid-shutdown: the others need not wait for its drain any more.
            log("loop \(index) stopped during the shutdown without being asked (its \(Loop.kind) backend returned from run())")
            postFlushIfDrained()
        case nil:
            break
        }
        loopExited()
    }

    private func streamIndex(of r: SpoolStreamRecovery) -> Int {
        // recoverAll lists only names streamNumber accepts (never negative, so `% n` is an index).
        SpoolRecovery.streamNumber(directoryName: (r.directory as NSString).lastPathComponent) ?? 0
    }

    private func setUp(_ w: LoopWorker<Loop>, recovered: [SpoolStreamRecovery]) throws {
        var options = SpoolWriterOptions(maxCommitDelay: 0, loopIndex: w.index)
        options.loopIndex = w.index
        let primaryDir = config.spoolPath + "/loop-\(w.index)"
        let own = recovered.first { streamIndex(of: $0) == w.index }
        w.spools[w.index] = try SpoolWriter(loop: w.loop, directory: primaryDir, recovered: own, options: options)
        for r in recovered where streamIndex(of: r) != w.index {
            var o = options
            o.loopIndex = streamIndex(of: r) & 0xFF
            w.spools[streamIndex(of: r)] = try SpoolWriter(loop: w.loop, directory: r.directory, recovered: r, options: o)
        }
        for spool in w.spools.values { spool.report = { [unowned self] in self.log("spool: \($0)") } }
        let resolver = DaemonResolver(loop: w.loop, servers: config.dnsServers)
        let router = DaemonRouter(policies: w.policies, mxLookup: resolver.mxLookup, addressLookup: resolver.addressLookup)
        w.setUp(router: router)
        accounting.startPeriodicFlush(on: w.loop)
        let listeners = config.effectiveSMTPListeners
        try w.startListening(on: listeners, reusePort: workers.count > 1)
        if let dummy = config.dummySMTPListener { try w.startDummyListener(on: dummy, reusePort: workers.count > 1) }
        if let api = config.httpInjection.listener {
            try w.startHTTPInjection(config.httpInjection, on: api, reusePort: workers.count > 1)
        }
        if w.index == 0, let mgmt = config.httpManagement {
            let server = ManagementServer(loop: w.loop, options: .init(address: mgmt)) { [unowned self] request, respond in
                self.handleManagement(request, respond: respond)
            }
            try server.start()
            management = server
        }
    }

    private func requeueRecovered(on w: LoopWorker<Loop>, recovered: [SpoolStreamRecovery]) {
        var count = 0
        for r in recovered where worker(forStream: streamIndex(of: r)) === w {
            let stream = streamIndex(of: r)
            for m in r.messages where m.states.pendingCount > 0 {
                let message = w.makeMessage(id: m.id, envelope: m.envelope, stream: stream, size: m.location.bodyLength,
                                            recordLength: Int(m.location.recordLength), receivedAt: w.loop.now,
                                            states: m.states)
                reemitInjectedEvents(message, states: m.states)
                w.dispatchOrPageOut(message)
                count += 1
            }
        }
        if count > 0 { log("loop \(w.index): re-queued \(count) message(s) from the spool") }
    }

    // MARK: Shutdown and reload

    /// SIGTERM/SIGINT shut down, SIGHUP reloads; `DaemonSignals.handled` are
    /// blocked since the process's first line (`runDaemon`), so one that came
    /// during start-up is acted on now (ProcessSignals says why this model).
    private func installSignalHandlers() -> Bool {
        do {
            try ProcessSignals.handle(DaemonSignals.handled, name: "signals") { [weak self] sig in
                // Off the signal thread: a reload waits for every loop, and a second TERM must not wait for it.
                DispatchQueue.global().async { [weak self] in
                    guard let self else { return }
                    if sig == SIGHUP { self.reload() } else { self.shutdown(reason: sig == SIGTERM ? "SIGTERM" : "SIGINT") }
                }
            }
            return true
        } catch {
            log("cannot start the signal thread: \(error)")
            return false
        }
    }

    /// Stops accepting, lets in-flight deliveries finish, flushes the spool and
    /// accounting, and stops every loop. Thread-safe. `reason` (the signal)
    /// goes into the log line: a daemon that stopped unasked must be told
    /// apart from one that crashed.
    ///
    /// Bounded: deliveries still in flight after `shutdown-timeout` are
    /// abandoned (their messages stay spooled for the next start), and a
    /// second call (a second SIGTERM or SIGINT) does that at once. Injection
    /// clients whose message is being committed get their 250 before their
    /// connection closes; nothing new is committed once shutdown began.
    public func shutdown(reason: String? = nil) {
        // nil: shutdown had begun already (a second signal).
        let deadline = lock.withLock { () -> Duration? in
            if shuttingDown { return nil }
            shuttingDown = true
            return config.shutdownTimeout
        }
        guard let deadline else {
            forceStop(why: "\(reason ?? "shutdown") again")
            return
        }
        log((reason.map { "shutting down (\($0))" } ?? "shutting down")
            + "; deliveries in flight get \(deadline.configText) (shutdown-timeout), a second signal stops them at once")
        // Two phases, because a loop's deliveries write their outcomes into the
        // spool of the loop that received the message (`LoopWorker.outcome` posts
        // them with `loop.execute`), and read bodies from it:
        //  1. every loop drains: injections finish, deliveries in flight finish
        //     (or are abandoned by a forced stop); each delivered recipient's `d`
        //     record is logged and its outcome posted to the owning spool's loop
        //     before its engine reports done;
        //  2. once every loop has drained (`loopDrained`), each loop flushes its
        //     spool writers (fsync) and stops. A loop that flushed and stopped as
        //     soon as its own work was done lost the outcomes other loops posted
        //     to it later (never run, or run after the last fsync): the recipient
        //     was delivered again after the restart.
        // Phase 2 is posted with `execute` after every phase-1 post (the drain
        // count is taken under `lock`), and a loop runs posted work in submission
        // order, so the flush covers every outcome.
        let live = lock.withLock { workers.filter { !deadLoops.contains($0.index) } }
        for w in live {
            w.loop.execute { [self] in
                w.stopListening()
                if w.index == 0 { management?.stop() }
                let remaining = LoopConfined(2)
                let step = {
                    remaining.value -= 1
                    if remaining.value == 0 { self.loopDrained(w.index) }
                }
                w.finishInjections(step)
                w.engine.shutdown(step)
            }
        }
        // Every loop dead already: nothing will report a drain.
        postFlushIfDrained()
        let nanoseconds = UInt64(max(0, deadline.components.seconds)) * 1_000_000_000
            + UInt64(max(0, deadline.components.attoseconds / 1_000_000_000))
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(min(nanoseconds, UInt64(Int.max))))) { [self] in
            forceStop(why: "shutdown-timeout (\(deadline.configText)) reached")
        }
    }

    /// Abandons every delivery still in flight (its message stays spooled:
    /// it is retried after the next start) so that the loops stop now. If
    /// they still have not stopped after `forcedStopGrace` (a loop stuck in
    /// a system call), the process exits without them.
    private func forceStop(why: String) {
        // nil: a forced stop is already under way.
        let stillRunning = lock.withLock { () -> Bool? in
            if forcing { return nil }
            forcing = true
            return pendingStops > 0
        }
        guard stillRunning == true else { return }
        log("\(why): abandoning deliveries in flight (their messages stay in the spool)")
        for w in workers {
            w.loop.execute { w.engine.forceStop("delivery interrupted: the MTA is shutting down") }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.forcedStopGrace) { [self] in
            let stuck = lock.withLock { pendingStops > 0 }
            guard stuck else { return }
            // Not even the accounting writer is touched: a stuck loop may hold it.
            log("\(pendingStops) loop(s) did not stop within \(Self.forcedStopGrace) after the forced stop; exiting without them")
            _exit(1)
        }
    }

    /// How long a forced stop waits for the loops before the process exits anyway.
    static var forcedStopGrace: DispatchTimeInterval { .seconds(10) }

    /// Phase 1 of shutdown is over on one loop (no injection, no delivery left
    /// on it); the last one starts phase 2 on every loop.
    private func loopDrained(_ index: Int) {
        lock.withLock { _ = drainedLoops.insert(index) }
        postFlushIfDrained()
    }

    /// Starts phase 2 once every loop has drained or died (a dead loop, see
    /// `deadLoops`, never reports a drain); once.
    private func postFlushIfDrained() {
        let live = lock.withLock { () -> [LoopWorker<Loop>]? in
            guard shuttingDown, !flushPosted,
                  workers.allSatisfy({ drainedLoops.contains($0.index) || deadLoops.contains($0.index) }) else { return nil }
            flushPosted = true
            return workers.filter { !deadLoops.contains($0.index) }
        }
        for w in live ?? [] {
            w.loop.execute { [self] in flushAndStop(w) }
        }
    }

    /// Stops every loop (start-up failed after they were created): their return is expected.
    private func stopLoops() {
        for w in workers { stop(w) }
    }

    private func stop(_ w: LoopWorker<Loop>) {
        lock.withLock { _ = stopsAsked.insert(w.index) }
        w.loop.stop()
    }

    private func flushAndStop(_ w: LoopWorker<Loop>) {
        var remaining = w.spools.count
        if remaining == 0 { stop(w); return }
        for spool in w.spools.values {
            spool.flush { [self] result in
                if case .failure(let e) = result, spool.pendingOutcomeCount > 0 {
                    // Kept in memory while the spool could not write them: those recipients go out again after a restart.
                    log("spool \(spool.directory): \(spool.pendingOutcomeCount) outcome(s) not written at shutdown "
                        + "(\(e)); their recipients will be delivered again after a restart")
                }
                remaining -= 1
                if remaining == 0 { stop(w) }
            }
        }
    }

    private func loopExited() {
        let last = lock.withLock { () -> Bool in
            pendingStops -= 1
            return pendingStops == 0
        }
        if last { exited.signal() }
    }

    /// Re-reads the config file and applies domain, pattern-list and VMTA
    /// settings to every loop without dropping connections, and re-reads the
    /// server TLS certificate and key (renewed certificates need no restart):
    /// new connections get the new context, open ones keep theirs. All or
    /// nothing: a config or TLS file that fails leaves everything running as
    /// it was. Listeners, spool and threads keep their start-up values.
    /// `applied` runs on worker 0's loop once every loop has switched (the
    /// "reloaded" line is logged then), so a caller that waits for it knows
    /// every new connection sees the new settings.
    @discardableResult
    public func reload(_ applied: @escaping @Sendable () -> Void = {}) -> Result<Void, ConfigError> {
        reloadLock.withLock { reloadHoldingLock(applied) }
    }

    private func reloadHoldingLock(_ applied: @escaping @Sendable () -> Void) -> Result<Void, ConfigError> {
        let newConfig: PeregrineConfig
        let newTLS: TLSContext?
        do {
            newConfig = try PeregrineConfig.load(path: options.configPath)
            newTLS = try makeServerTLSContext(for: newConfig)
        } catch {
            log("reload failed, keeping the running config: \(error)")
            return .failure(error)
        }
        let oldWebhooks = lock.withLock { (config.webhooks, config.webhookMaxAge) }
        if oldWebhooks.0 != newConfig.webhooks || oldWebhooks.1 != newConfig.webhookMaxAge {
            reloadWebhooks(newConfig)
        }
        let oldRuntime = lock.withLock { () -> RuntimeSettings in
            let previous = config.runtime
            config = newConfig
            paging.setLimit(newConfig.maxQueuedInMemory)
            currentServerTLSContext = newTLS
            return previous
        }
        // Before the loops see the new config: their caches then find the new limits.
        connectionBudgets.configure(newConfig)
        if newConfig.runtime != oldRuntime {
            // The log file is open and root is gone: like the listeners, these keep their start-up values.
            log("warning: log-file, log-rotate and run-as-* changes take effect at the next start, not on reload")
        }
        var line = "reloaded \(options.configPath)"
        if let tls = newConfig.serverTLS { line += " (TLS certificate \(tls.certificateFile) re-read)" }
        let done = line
        // Counted on worker 0's loop only, like the management API's gather.
        let remaining = LoopConfined(workers.count)
        guard let home = workers.first else {
            // Not running yet (no loops): the new config is what run() will start with.
            log(done)
            applied()
            return .success(())
        }
        for w in workers {
            w.loop.execute {
                w.policies.reload(newConfig)
                w.serverTLSContext = newTLS
                w.engine.reloadPolicies()
                home.loop.execute {
                    remaining.value -= 1
                    if remaining.value == 0 {
                        self.log(done)
                        applied()
                    }
                }
            }
        }
        return .success(())
    }

    var uptimeSeconds: Double { Double(monotonicNanoseconds() - startedAt) / 1e9 }
}

/// The signals the daemon acts on (SIGTERM/SIGINT: shut down; SIGHUP: reload).
/// `peregrine run` blocks them before any thread exists (ProcessSignals).
public enum DaemonSignals {
    public static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]
}
