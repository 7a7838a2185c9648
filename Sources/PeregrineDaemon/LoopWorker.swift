#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineHTTP
import PeregrineSMTP
import PeregrineTLS
import PeregrineTransport
import PeregrineSpool
import PeregrineAccounting
import PeregrineEngine

/// Everything one event loop owns (principle 4): its spool stream(s), its
/// injection listener, the delivery queues sharded to it, and their
/// connections. Other workers reach it only through `loop.execute`.
public final class LoopWorker<Loop: EventLoop>: DeliveryObserver, DeliveryBodySource {
    public let index: Int
    public let loop: Loop
    unowned let daemon: Daemon<Loop>
    let policies: ConfigPolicySource
    /// The server TLS context new injection connections use (nil: no TLS).
    /// Only touched on this loop: a reload swaps it through `loop.execute`,
    /// and a connection keeps the context it started with (it holds a
    /// reference, as does OpenSSL's `SSL` on its `SSL_CTX`).
    var serverTLSContext: TLSContext?
    private(set) var engine: DeliveryEngine<Loop>!
    /// Spool writers by global stream number (this worker's own, plus any
    /// left from a run with more threads).
    var spools: [Int: SpoolWriter<Loop>] = [:]
    private var listeners: [Listener] = []
    /// `dummy-smtp-port` (LoopWorker+DummyListener.swift): its listener and open sessions.
    var dummyListener: Listener?
    var dummyConnections: [ObjectIdentifier: AnyObject] = [:]
    private var injections: [ObjectIdentifier: SMTPServerConnection<Loop>] = [:]
    private var poolCursor: [String: Int] = [:]
    let defaultVMTA: String
    /// DKIM signing at injection (its OpenSSL contexts are this loop's own).
    let dkim = InjectionDKIMSigner()

    // Counters (read by the management API on this loop).
    var received: UInt64 = 0
    var delivered: UInt64 = 0
    var bounced: UInt64 = 0
    var deferrals: UInt64 = 0
    var queueDeferrals: UInt64 = 0
    var injectionConnections: UInt64 = 0
    /// Connections answered 421 because of `max-smtp-in` (total or per address).
    var injectionRefusals: UInt64 = 0
    /// Failed SMTP AUTH attempts (wrong credentials or a locked-out address).
    var authFailures: UInt64 = 0
    /// Accepts that failed (EMFILE, ENFILE, …); logged at most once per `acceptLogInterval`.
    var acceptFailures: UInt64 = 0
    /// `max-queued-in-memory` (LoopWorker+QueuePaging.swift): messages left on
    /// disk only and read back; whether the page-in timer is armed.
    var pagedOut: UInt64 = 0
    var pagedIn: UInt64 = 0
    var pageInArmed = false
    /// Injection (or spool recovery) to delivery, per delivered recipient (`/metrics`).
    var deliveryLatency = PrometheusHistogram(bounds: PrometheusHistogram.deliveryLatencyBounds)
    /// SMTP transaction time per provider (LatencyMetrics.swift).
    var transactionTimes = TransactionTimes()
    private var acceptFailuresUnlogged: UInt64 = 0
    private var lastAcceptFailureLog: UInt64?
    /// One accept-failure line per loop per minute: out of descriptors, the
    /// backend retries every few milliseconds, and each retry would log.
    static var acceptLogInterval: UInt64 { 60_000_000_000 }

    init(index: Int, loop: Loop, daemon: Daemon<Loop>, config: PeregrineConfig, serverTLSContext: TLSContext?) {
        self.index = index
        self.loop = loop
        self.daemon = daemon
        self.policies = ConfigPolicySource(config: config)
        self.policies.connectionBudgetTable = daemon.connectionBudgets
        self.policies.coldVMTAQuota = daemon.coldVMTAQuota
        self.serverTLSContext = serverTLSContext
        self.defaultVMTA = config.virtualMTAs.first?.name ?? ConfigPolicySource.defaultVMTAName
    }

    /// Builds the engine; `router` comes from the daemon (DNS client on this loop).
    func setUp(router: DeliveryRouter) {
        engine = DeliveryEngine(loop: loop, policies: policies, router: router, bodySource: self, observer: self)
        engine.tls.context = daemon.clientTLSContext
        if let min = DeliveryBodyRange.minimumSizeFromEnvironment { engine.fileBodyMinimumSize = min }
    }

    var primarySpool: SpoolWriter<Loop>? { spools[index] }

    // MARK: Injection

    func startListening(on addresses: [SocketAddress], reusePort: Bool) throws(IOError) {
        for address in addresses {
            let implicitTLS = policies.config.implicitTLSListeners.contains(address)
            let l = try loop.listen(on: address, options: ListenOptions(backlog: 1024, reusePort: reusePort)) { [unowned self] r in
                switch r {
                case .success(let c): self.accepted(c, implicitTLS: implicitTLS)
                case .failure(let e): self.acceptFailed(on: address, e)
                }
            }
            listeners.append(l)
        }
    }

    var listenerAddresses: [SocketAddress] { listeners.map(\.address) }

    /// `http-injection-listener` on this loop (HTTPInjection/HTTPInjectionServer.swift).
    private(set) var httpInjection: HTTPInjectionServer<Loop>?

    func startHTTPInjection(_ settings: HTTPInjectionSettings, on address: SocketAddress, reusePort: Bool) throws(IOError) {
        let server = HTTPInjectionServer(worker: self)
        try server.start(settings: settings, address: address, reusePort: reusePort)
        httpInjection = server
    }

    /// The backend keeps listening and retries after a short pause (it never
    /// spins on EMFILE); here the failure is counted and logged at most once
    /// per `acceptLogInterval`, with the number of failures not logged.
    private func acceptFailed(on address: SocketAddress, _ error: IOError) {
        acceptFailures += 1
        let now = loop.now
        if let last = lastAcceptFailureLog, now &- last < Self.acceptLogInterval {
            acceptFailuresUnlogged += 1
            return
        }
        let more = acceptFailuresUnlogged > 0 ? " (\(acceptFailuresUnlogged) more since the last report)" : ""
        acceptFailuresUnlogged = 0
        lastAcceptFailureLog = now
        daemon.log("accept on \(address) (loop \(index)): \(error)\(more); accepting pauses briefly and retries, "
                   + "next report in \(Self.acceptLogInterval / 1_000_000_000)s at the earliest")
    }

    /// The SMTP listeners; the API listener closes in `finishInjections` (its requests drain there).
    func stopListening() {
        for l in listeners { loop.closeListener(l) }
        listeners.removeAll()
        if let l = dummyListener { loop.closeListener(l) }
        dummyListener = nil
        // The API listener is not closed here: it drains in finishInjections.
    }

    private func accepted(_ c: AcceptedConnection, implicitTLS: Bool) {
        let config = policies.config
        let source = config.source(for: c.peer)
        var sessionConfig = SMTPServerConfiguration(hostname: daemon.hostName)
        sessionConfig.banner = "ESMTP Peregrine"
        sessionConfig.maxErrors = source.maxErrorsPerConnection ?? config.maxSMTPInErrors
        if let cap = source.maxRcptPerMessage { sessionConfig.maxRecipients = cap }
        if source.maxMessageSize > 0 { sessionConfig.maxMessageSize = source.maxMessageSize }
        let tlsContext = serverTLSContext
        sessionConfig.startTLSEnabled = tlsContext != nil && !implicitTLS && source.allowStartTLS
        sessionConfig.implicitTLS = tlsContext != nil && implicitTLS
        sessionConfig.authEnabled = config.authEnabled
        sessionConfig.allowUnencryptedAuth = source.allowUnencryptedPlainAuth
        sessionConfig.requireAuth = source.requireAuth
        // XVERP is for the applications that inject outbound mail: the
        // clients whose <source> may relay or VERPs by default (as Postfix
        // offers it to smtpd_authorized_verp_clients only).
        sessionConfig.advertiseXVERP = source.alwaysAllowRelaying || source.verpDefault
        let ip = c.peer.ip
        let admission = daemon.inboundLimits.admit(ip: ip, perAddress: source.maxSMTPIn, total: config.maxSMTPIn)
        let handler = InjectionHandler(worker: self, peer: c.peer, source: source)
        switch admission {
        case .admitted: break
        case .tooManyFromAddress:
            handler.refusal = SMTPReply(code: 421, enhancedCode: EnhancedStatusCode(4, 7, 0),
                                        "\(daemon.hostName) too many connections from \(ip), try again later")
        case .tooManyInTotal:
            handler.refusal = SMTPReply(code: 421, enhancedCode: EnhancedStatusCode(4, 7, 0),
                                        "\(daemon.hostName) too many connections, try again later")
        }
        let session = SMTPServerSession(configuration: sessionConfig, delegate: handler)
        let connection = SMTPServerConnection(loop: loop, socket: c.socket, session: session)
        connection.tlsContext = tlsContext
        // A refused client gets its 421 in plain text, never a TLS handshake first.
        connection.implicitTLS = implicitTLS && tlsContext != nil && admission == .admitted
        connection.idleTimeout = config.smtpIdleTimeout.nanoseconds
        connection.sessionTimeout = config.smtpSessionTimeout?.nanoseconds ?? 0
        connection.handler = handler
        handler.connection = connection
        injectionConnections += 1
        if admission != .admitted { injectionRefusals += 1 }
        let key = ObjectIdentifier(connection)
        injections[key] = connection
        if source.logConnections {
            daemon.logDetail("smtp \(c.peer): connected to \(c.local) (loop \(index))"
                             + (admission == .admitted ? "" : ", refused: over max-smtp-in"))
        }
        connection.onClose = { [unowned self, unowned handler] _ in
            if handler.source.logConnections { self.daemon.logDetail("smtp \(c.peer): connection closed") }
            handler.connection = nil
            self.injections[key] = nil
            if admission == .admitted { self.daemon.inboundLimits.release(ip: ip) }
            self.checkInjectionsDrained()
        }
        connection.start()
    }

    var openInjections: Int { injections.count }

    /// Set on this loop when shutdown begins: no new message is committed.
    private(set) var isShuttingDown = false
    private var injectionsDrained: (() -> Void)?

    /// Shutdown: every injection connection drains. A message being
    /// committed gets its reply (a client never sees EOF after its message
    /// was committed: that would make it send the message again); then the
    /// client's next command, or the drain deadline, gets `421 4.3.2` and
    /// the connection closes (RFC 5321 §3.8), so a client in the middle of
    /// a transaction knows to retry rather than seeing a bare EOF. `done`
    /// runs when no injection connection is left.
    func finishInjections(_ done: @escaping () -> Void) {
        isShuttingDown = true
        injectionsDrained = done
        let reply = SMTPReply(code: 421, enhancedCode: EnhancedStatusCode(4, 3, 2),
                              "\(daemon.hostName) service shutting down, closing connection")
        let deadline = min(Self.injectionDrainDeadline, policies.config.shutdownTimeout.nanoseconds)
        for c in Array(injections.values) { c.drain(reply, deadline: deadline) }
        if let api = httpInjection {
            // The API's requests drain the same way (HTTPInjectionServer.drain).
            apiDraining = true
            api.drain(deadline: deadline) { [unowned self] in
                self.httpInjection = nil
                self.apiDraining = false
                self.checkInjectionsDrained()
            }
        }
        checkInjectionsDrained()
    }

    private var apiDraining = false

    /// How long a draining injection client has to send its next command
    /// before it gets the 421 anyway (at most `shutdown-timeout`): short, so
    /// that idle injection connections do not hold the shutdown up.
    static var injectionDrainDeadline: UInt64 { 2_000_000_000 }

    private func checkInjectionsDrained() {
        guard injections.isEmpty, !apiDraining, let done = injectionsDrained else { return }
        injectionsDrained = nil
        done()
    }

    /// Picks the VMTA for a message: a pool rotates through its members per message.
    func pickVMTA(_ name: String) -> String? {
        let target = policies.injectionTarget(named: name)
        let key = target.key
        if !target.members.isEmpty {
            let i = poolCursor[key, default: 0]
            poolCursor[key] = i &+ 1
            return target.members[i % target.members.count]
        }
        return target.isVirtualMTA ? key : nil
    }

    /// A Message-ID local part unique to this host: the time in
    /// milliseconds, the loop, and 64 random bits, in hex.
    func newMessageIDLocalPart() -> String {
        let random = UInt64.random(in: 0...UInt64.max)
        return String(wallClockMilliseconds(), radix: 16) + "." + String(index) + "." + String(random, radix: 16)
    }

    func receivedHeader(peer: SocketAddress, helo: String, recipient: String?, tls: Bool = false,
                        authenticated: Bool = false) -> [UInt8] {
        // RFC 3848: ESMTPS when the message came over TLS, ESMTPA/ESMTPSA after AUTH. The HELO name and
        // the recipient come from the peer: the session has checked them, and
        // they are escaped here again so that no byte of theirs can end the
        // header line (a bare CR becomes a line end on the way out).
        // Built as bytes: it is written once per injected message.
        var h: [UInt8] = []
        h.reserveCapacity(128 + helo.utf8.count + daemon.hostName.utf8.count + (recipient?.utf8.count ?? 0))
        h += "Received: from ".utf8
        appendReceivedHeaderText(helo, to: &h)
        h += " ([".utf8
        h += peer.ip.utf8
        h += "])\r\n\tby ".utf8
        h += daemon.hostName.utf8
        h += " (Peregrine) with ESMTP".utf8
        if tls { h.append(UInt8(ascii: "S")) }
        if authenticated { h.append(UInt8(ascii: "A")) }
        if let r = recipient {
            h += "\r\n\tfor <".utf8
            appendReceivedHeaderText(r, to: &h)
            h.append(UInt8(ascii: ">"))
        }
        h += "; ".utf8
        let now = wallClockSeconds()
        if now != receivedDate.seconds { receivedDate = (now, Array(RFC5322DateTime.format(now).utf8)) }
        h += receivedDate.text
        h += "\r\n".utf8
        return h
    }

    /// The last second's date as the Received header writes it: formatted once per second per loop.
    private var receivedDate: (seconds: Int64, text: [UInt8]) = (-1, [])

    /// Spools an injected message; `done` runs once it is durable (the 250) or failed.
    func accept(envelope: SpoolEnvelope, body: UnsafeRawBufferPointer, peer: SocketAddress, pool: String? = nil,
                smtpUser: String? = nil, _ done: @escaping (Result<MessageID, SpoolError>) -> Void) {
        guard let spool = primarySpool else { done(.failure(.writerFailed("no spool stream on loop \(index)"))); return }
        let receivedAt = loop.now
        let size = body.count
        var assignedID: MessageID?
        assignedID = spool.append(envelope: envelope, body: body) { [unowned self] result in
            switch result {
            case .success(let location):
                guard let id = assignedID else { return }
                self.received += 1
                let message = self.makeMessage(id: id, envelope: envelope, stream: self.index, size: size,
                                               recordLength: Int(location.recordLength), receivedAt: receivedAt, states: nil)
                message.pool = pool
                self.logReceived(message, peer: peer, smtpUser: smtpUser)
                self.emitInjectedEvents(message)
                self.dispatchOrPageOut(message)
                done(.success(id))
            case .failure(let e):
                done(.failure(e))
            }
        }
    }

    func makeMessage(id: MessageID, envelope: SpoolEnvelope, stream: Int, size: Int, recordLength: Int,
                     receivedAt: UInt64, states: RecipientStates?) -> QueuedMessage {
        // The envelope stays bytes (one buffer per message): a backlog holds a million of them.
        QueuedMessage(id: id, envelope: envelope,
                      vmta: envelope.vmta.isEmpty ? defaultVMTA : String(decoding: envelope.vmta, as: UTF8.self),
                      receivedAtWall: envelope.receivedAt / 1000, receivedAt: receivedAt, bodySize: size,
                      recordLength: recordLength, stream: stream, states: states)
    }

    // MARK: Spool access for any worker (runs on this loop)

    func recordOutcome(stream: Int, id: MessageID, recipient: Int, state: RecipientState) {
        spools[stream]?.recordOutcome(id, recipient: recipient, state: state)
    }

    public func readBody(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                         _ done: @escaping (Result<UnsafeRawBufferPointer, IOError>) -> Void) {
        let owner = daemon.worker(forStream: message.stream)
        if owner === self {
            readLocal(message, into: buffer, done)
        } else {
            // The buffer belongs to the asking connection until `done` runs back on its loop.
            let me = self
            let request = LoopConfined((buffer, done))
            owner.loop.execute {
                owner.readLocal(message, into: request.value.0) { result in
                    let reply = LoopConfined(result)
                    me.loop.execute { request.value.1(reply.value) }
                }
            }
        }
    }

    /// Like `readBody`: asked on the stream's own loop, the answer handed
    /// back. The range's descriptor is a dup made there, so it stays valid on
    /// this loop whatever that writer closes meanwhile.
    public func readBodyRange(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                              _ done: @escaping (Result<DeliveryBodyRange?, IOError>) -> Void) {
        let owner = daemon.worker(forStream: message.stream)
        if owner === self {
            readRangeLocal(message, into: buffer, done)
        } else {
            // The buffer belongs to the asking connection until `done` runs back on its loop.
            let me = self
            let request = LoopConfined((buffer, done))
            owner.loop.execute {
                owner.readRangeLocal(message, into: request.value.0) { result in
                    let reply = LoopConfined(result)
                    me.loop.execute { request.value.1(reply.value) }
                }
            }
        }
    }

    func readRangeLocal(_ message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                        _ done: @escaping (Result<DeliveryBodyRange?, IOError>) -> Void) {
        guard let spool = spools[message.stream] else { done(.success(nil)); return }
        spool.bodyRange(message.id, prefix: buffer) { result in
            switch result {
            case .success(let range):
                done(.success(range.map { DeliveryBodyRange(file: $0.file, offset: $0.offset, count: $0.count) }))
            case .failure(let e): done(.failure(IOError(.invalidArgument("\(e)"), "readBody")))
            }
        }
    }

    func readLocal(_ message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                   _ done: @escaping (Result<UnsafeRawBufferPointer, IOError>) -> Void) {
        guard let spool = spools[message.stream] else {
            done(.failure(IOError(.invalidArgument("no spool stream \(message.stream)"), "readBody")))
            return
        }
        spool.readBody(message.id, into: buffer) { result in
            switch result {
            case .success(let body): done(.success(body))
            case .failure(let e): done(.failure(IOError(.invalidArgument("\(e)"), "readBody")))
            }
        }
    }

    // MARK: DeliveryObserver

    /// Bounce and success reports to senders (RFC 3464).
    private(set) lazy var reports = DSNGenerator(worker: self)

    func outcome(_ message: QueuedMessage, _ recipient: Int, _ state: RecipientState) {
        let stream = message.stream
        let owner = daemon.worker(forStream: stream)
        if owner === self {
            recordOutcome(stream: stream, id: message.id, recipient: recipient, state: state)
        } else {
            let id = message.id
            owner.loop.execute { owner.recordOutcome(stream: stream, id: id, recipient: recipient, state: state) }
        }
    }

    public func delivered(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                          connection: DeliveryAttemptInfo) {
        delivered += 1
        daemon.paging.finished(1)
        let now = loop.now
        if now >= message.receivedAt { deliveryLatency.observe(seconds: Double(now - message.receivedAt) / 1e9) }
        afterWebhookEvent(.delivered, message, recipient, reply: reply) { [unowned self] in
            if !reports.report(message, recipient: recipient, action: .relayed, state: .delivered, queue: queue, reply: reply,
                               connection: connection) {
                outcome(message, recipient, .delivered)
            }
        }
        daemon.accounting.log(record(.delivered, message, recipient, queue, reply, connection: connection, category: ""))
    }

    public func bounced(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                        category: String?, connection: DeliveryAttemptInfo?) {
        bounced += 1
        daemon.paging.finished(1)
        let state: RecipientState = category == "message-expired" ? .expired : .bounced
        afterWebhookEvent(state == .expired ? .expired : .bounced, message, recipient, reply: reply,
                          category: category ?? "other") { [unowned self] in
            if !reports.report(message, recipient: recipient, action: .failed, state: state, queue: queue, reply: reply,
                               connection: connection) {
                outcome(message, recipient, state)
            }
        }
        daemon.accounting.log(record(.bounced, message, recipient, queue, reply, connection: connection,
                                     category: category ?? "other"))
        if let category { daemon.suppressAfterBounce(recipient: message.recipients[recipient].address, category: category) }
    }

    public func deferred(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                         connection: DeliveryAttemptInfo?) {
        deferrals += 1
        emitDeferredEvent(message, recipient, reply: reply)
        daemon.accounting.log(record(.transient, message, recipient, queue, reply, connection: connection, category: ""))
        reports.delayed(message, recipient: recipient, queue: queue, reply: reply, connection: connection)
    }

    public func stillWaiting(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                             connection: DeliveryAttemptInfo?) {
        reports.delayed(message, recipient: recipient, queue: queue, reply: reply, connection: connection)
    }

    public func queueDeferred(_ queue: DeliveryQueue, reason: String) {
        queueDeferrals += 1
        daemon.log("queue \(queue.key): every host failed, the queue waits for its retry time (\(reason))")
        daemon.accounting.log(AccountingRecord(type: .transientQueue, timeLogged: wallClockSeconds(),
                                               dsnAction: "delayed", dsnStatus: "4.4.1 (no answer from host)",
                                               dsnDiag: reason, bounceCat: "no-answer-from-host",
                                               vmta: queue.key.vmta, queue: queue.key.description))
    }

    public func messageCompleted(_ message: QueuedMessage) { reports.completed(message) }

    public func localShortageBegan(reason: String) {
        daemon.log("delivery: connections fail for lack of local resources (\(reason)); "
                   + "each queue waits its retry time, the MX hosts are not blamed; logged again when a connection opens")
    }

    public func localShortageEnded(failedConnects: Int, nanoseconds: UInt64) {
        daemon.log("delivery: connections open again, after \(failedConnects) connect(s) failed for lack of local resources "
                   + "over \(nanoseconds / 1_000_000_000).\(nanoseconds / 100_000_000 % 10) s")
    }

    public func queueModeChanged(_ queue: DeliveryQueue, _ change: QueueModeChange) {
        daemon.log("queue \(queue.key): \(change.logText)")
    }

    public func sourceDisabled(_ queue: DeliveryQueue, until: UInt64, reason: String, movedTo: String?, recipientsMoved: Int) {
        let seconds = until > loop.now ? (until - loop.now) / 1_000_000_000 : 0
        let source = policies.virtualMTA(named: queue.key.vmta)?.sourceAddress?.ip ?? queue.key.vmta
        let what = movedTo.map { "pool mail moves to \($0) (\(recipientsMoved) recipient(s) now)" } ?? "the queue waits"
        daemon.log("\(queue.key): source IP \(source) disabled for \(seconds)s (\(reason)); \(what)")
    }

    private func record(_ type: AccountingRecordType, _ m: QueuedMessage, _ r: Int, _ q: DeliveryQueue, _ reply: SMTPReply,
                        connection: DeliveryAttemptInfo?, category: String) -> AccountingOutcomeRecord {
        AccountingOutcomeRecord(type: type, timeLogged: wallClockSeconds(), message: m, recipient: r,
                                queue: q.key, reply: reply, connection: connection, category: category)
    }

    private func logReceived(_ m: QueuedMessage, peer: SocketAddress, smtpUser: String?) {
        guard daemon.accounting.accepts(.received) else { return }
        let now = wallClockSeconds()
        for r in m.recipients.indices {
            daemon.accounting.log(AccountingReceivedRecord(timeLogged: now, message: m, recipient: r, peer: peer,
                                                                   smtpUser: smtpUser ?? ""))
        }
    }
}
