#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// One outbound SMTP connection of a queue: the handler of an
/// `SMTPClientConnection` (PeregrineTransport: socket, buffers, timers,
/// STARTTLS, close) that tries the queue's hosts in MX order from the
/// VMTA's source IP, asks its queue for work each time the session is
/// ready, reads each body from the spool and reports each result to the
/// engine. Completion closures are created once per connection, not per event.
///
/// Memory ceiling (principle 8): the transport's (see `SMTPClientConnection`),
/// whose send buffer holds at most one transaction: its commands (at most
/// max-rcpt-per-transaction RCPTs) and its body (read from the spool into
/// `bodyBuffer`, at most the message size).
final class DeliveryConnection<Loop: EventLoop>: SMTPClientConnectionHandler {
    unowned let engine: DeliveryEngine<Loop>
    let loop: Loop
    let queue: DeliveryQueue
    let vmta: VirtualMTA
    let hosts: [RouteHost]
    private var hostIndex = 0
    /// The host being connected to (it becomes `host` once connected).
    private var connectingTo: RouteHost?
    private var client: SMTPClientConnection<Loop, DeliveryConnection<Loop>>!
    var session: SMTPClientSession { client.session }
    private let bodyBuffer = OwnedBuffer(capacity: 8192)
    private var body = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The current body as a spool file range (sent without copying), when it is stored in wire form.
    private var bodyRange: DeliveryBodyRange?
    private var closing = false
    private(set) var closed = false
    private var idleTimer: TimerHandle?
    private var current: DeliveryItem?
    /// The queue `current` was taken from: `queue`, or on a site's connection any member.
    private var currentQueue: DeliveryQueue?
    private(set) var messagesSent = 0
    private(set) var isIdle = false
    private var everReady = false
    var attemptInfo: DeliveryAttemptInfo?
    /// When the current transaction's MAIL FROM went out (loop time): its duration for `/metrics`.
    private var transactionStarted: UInt64 = 0
    /// STARTTLS for this connection (nil: plain text); see DeliveryConnection+TLS.swift.
    var tls: SMTPClientTLS? { client.tls }
    var host: RouteHost?
    /// A TLS handshake failed on this connection: the engine's TLS fallback
    /// handles it, it is not a failure of the host.
    var tlsFailed = false
    /// The receiver handled a transaction on this connection (a reply that is
    /// not a 421): a later 421 is it closing a working connection, not failing.
    var hostReplied = false
    /// A spool read whose callback is still to come: the engine keeps this
    /// object alive until it and the transport's operations have all run.
    private var readingBody = false

    private var onIdleTimeout: (() -> Void)!
    private var onWaitOver: (() -> Void)!
    private var onBodyRead: ((Result<UnsafeRawBufferPointer, IOError>) -> Void)!
    private var onBodyRangeRead: ((Result<DeliveryBodyRange?, IOError>) -> Void)!

    init(engine: DeliveryEngine<Loop>, loop: Loop, queue: DeliveryQueue, vmta: VirtualMTA, hosts: [RouteHost],
         configuration: SMTPClientConfiguration) {
        self.engine = engine
        self.loop = loop
        self.queue = queue
        self.vmta = vmta
        self.hosts = hosts
        client = SMTPClientConnection(loop: loop, configuration: configuration, handler: self)
        // askForWork re-arms these on every idle answer (each kick asks every idle connection).
        onIdleTimeout = { [unowned self] in
            self.idleTimer = nil
            if self.isIdle { self.quit() }
        }
        onWaitOver = { [unowned self] in self.idleTimer = nil; self.askForWork() }
        onBodyRead = { [unowned self] result in self.bodyRead(result) }
        onBodyRangeRead = { [unowned self] result in self.bodyRangeRead(result) }
    }

    // MARK: Connecting

    func start() { connectNext(lastError: nil) }

    private func connectNext(lastError: String?) {
        // MX hosts whose sessions failed lately are skipped (DeliveryEngine+HostBackoff.swift).
        while hostIndex < hosts.count && !engine.isUsable(hosts[hostIndex], vmta: vmta.name, now: loop.now) { hostIndex += 1 }
        guard hostIndex < hosts.count else {
            let backedOff = hosts.lazy.compactMap { self.engine.backoffReason($0, vmta: self.vmta.name) }.first
            finishClosed(connectFailure: lastError ?? backedOff.map { "MX hosts backed off: \($0)" } ?? "no host to connect to")
            return
        }
        let host = hosts[hostIndex]
        hostIndex += 1
        connectingTo = host
        client.connect(to: host.address, from: vmta.sourceAddress, timeout: queue.policy.connectTimeout.nanoseconds)
    }

    func clientConnectionDidConnect(localAddress: SocketAddress?) {
        guard let host = connectingTo else { return }
        self.host = host
        engine.connectSucceeded()
        client.tls = engine.tls.client(for: host, policy: queue.policy, now: loop.now)
        attemptInfo = DeliveryAttemptInfo(sourceAddress: localAddress, destination: host.address,
                                          destinationName: host.name, esmtp: false)
    }

    /// The connect failed here, not at the host (DeliveryEngine+LocalShortage.swift).
    private(set) var failedLocally = false

    func clientConnectionDidFailToConnect(_ e: IOError) {
        guard let host = connectingTo else { return }
        if DeliveryEngine<Loop>.isLocalShortage(e) {
            // Not the host's failure, and every other host would fail the same way.
            failedLocally = true
            finishClosed(connectFailure: "local: cannot open a connection to \(host.name) (\(host.address)): \(e)")
            return
        }
        let why = "\(host.name) (\(host.address)): \(e)"
        let isNew = engine.hostFailed(host, vmta: vmta.name, queue: queue, reason: why)
        let now = loop.now
        if isNew, hosts[hostIndex...].contains(where: { self.engine.isUsable($0, vmta: self.vmta.name, now: now) }) {
            engine.movedOn(from: host, queue: queue, reason: "\(e)")
        }
        connectNext(lastError: why)
    }

    // MARK: Driving the session

    func clientConnectionDidNegotiate(_ extensions: SMTPExtensions) {
        everReady = true
        attemptInfo?.esmtp = extensions.isESMTP
    }

    func clientConnectionIsReady(_ extensions: SMTPExtensions) { askForWork() }

    func clientConnectionWillSendBody() {
        if let range = bodyRange {
            bodyRange = nil
            if client.writeBody(file: range.file, offset: range.offset, count: range.count) {
                engine.bodiesSentFromFile &+= 1
                return
            }
            copyBody(from: range)
            return
        }
        client.writeBody(body)
        body = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    func clientConnectionDidComplete(_ result: SMTPMessageResult) {
        dropBodyRange()   // refused before its body went out
        guard let item = current else { return }
        current = nil
        messagesSent += 1
        engine.observer.transactionCompleted(currentQueue ?? queue, nanoseconds: loop.now &- transactionStarted)
        engine.complete(item, from: currentQueue ?? queue, result: result, on: self, info: attemptInfo)
    }

    func clientConnectionDidClose(_ reason: SMTPClientCloseReason?) {
        closeReason = reason
        finishClosed(connectFailure: nil)
    }

    func clientConnectionDidFinish() { releaseIfDone() }

    /// Called when the session is ready: take the next item from the queue.
    func askForWork() {
        guard session.isReady, current == nil, !closing else { return }
        if engine.isStopping || retired { quit(); return }
        if let t = idleTimer { loop.cancelTimer(t); idleTimer = nil }
        let (take, from) = queue.site?.take(now: loop.now, messagesOnConnection: messagesSent)
            ?? (queue.take(now: loop.now, messagesOnConnection: messagesSent), queue)
        switch take {
        case .item(let item):
            if isIdle { isIdle = false; queue.idleConnections -= 1 }
            currentQueue = from
            begin(item)
        case .wait(let until):
            becomeIdle()
            let delay = until > loop.now ? until - loop.now : 0
            idleTimer = loop.scheduleTimer(after: delay, onWaitOver)
        case .idle:
            becomeIdle()
            idleTimer = loop.scheduleTimer(after: engine.idleTimeout, onIdleTimeout)
        case .close:
            quit()
        }
    }

    private func becomeIdle() {
        if !isIdle { isIdle = true; queue.idleConnections += 1 }
    }

    private func begin(_ item: DeliveryItem) {
        current = item
        let message = item.message
        bodyBuffer.clear()
        bodyBuffer.reserve(message.recordLength)
        readingBody = true
        if message.bodySize >= engine.fileBodyMinimumSize && client.canSendBodyFromFile {
            engine.bodySource.readBodyRange(of: message, into: bodyBuffer.memory, onBodyRangeRead)
        } else {
            engine.bodySource.readBody(of: message, into: bodyBuffer.memory, onBodyRead)
        }
    }

    /// The spooled message of `current` was read (or not): start the transaction.
    private func bodyRead(_ result: Result<UnsafeRawBufferPointer, IOError>) {
        readingBody = false
        defer { releaseIfDone() }
        guard !closed, let item = current else { return }
        let message = item.message
        switch result {
        case .success(let body):
            self.body = body
            startTransaction(item)
        case .failure(let e):
            // The body cannot be read: a local problem, not the receiver's.
            current = nil
            engine.bodyUnreadable(item, from: currentQueue ?? queue, error: e)
            askForWork()
        }
    }

    /// MAIL FROM, RCPT TO…, DATA for `item`, whose body is ready (`body` or `bodyRange`).
    private func startTransaction(_ item: DeliveryItem) {
        let message = item.message
        let rcpts = item.recipients.map { message.recipients[$0].address }
        // A VERP item holds one recipient (DeliveryEngine.submit).
        let mailFrom = message.verp && rcpts.count == 1
            ? VERP.returnPath(sender: message.sender, recipient: rcpts[0]) : message.sender
        let envelope = SMTPClientEnvelope(mailFrom: mailFrom, recipients: rcpts, size: message.bodySize,
                                          envelopeID: message.envId,
                                          ret: message.ret == .unspecified ? nil : message.ret == .full ? .full : .headers)
        transactionStarted = loop.now
        if !client.send(envelope) {
            dropBodyRange()
            current = nil
            (currentQueue ?? queue).putBack(item)
            quit()
        }
    }

    /// The spool said whether `current`'s body is stored in wire form (a file range) or not.
    private func bodyRangeRead(_ result: Result<DeliveryBodyRange?, IOError>) {
        readingBody = false
        guard !closed, let item = current else {
            if case .success(let range?) = result { _ = Glibc.close(range.file.fd) }
            releaseIfDone()
            return
        }
        switch result {
        case .success(let range?):
            bodyRange = range
            startTransaction(item)
        case .success(nil):
            // Not in wire form (dot-stuffing changes it): read and copy it.
            readingBody = true
            engine.bodySource.readBody(of: item.message, into: bodyBuffer.memory, onBodyRead)
        case .failure(let e):
            current = nil
            engine.bodyUnreadable(item, from: currentQueue ?? queue, error: e)
            askForWork()
        }
    }

    /// The connection could not take the file (a rare race: output queued
    /// before the body): the range is read here and copied like any body.
    private func copyBody(from range: DeliveryBodyRange) {
        defer { _ = Glibc.close(range.file.fd) }
        bodyBuffer.reserve(range.count)
        let target = UnsafeMutableRawBufferPointer(rebasing: bodyBuffer.memory[0 ..< range.count])
        // The pages were just read for the prefix or written and synced: a page-cache copy.
        if (try? Posix.preadFull(range.file.fd, target, at: range.offset)) == range.count {
            client.writeBody(UnsafeRawBufferPointer(target))
        } else {
            // Cannot happen short of a truncated segment; the session then times the body out (deferred).
            client.abandon("spool body unreadable")
        }
    }

    private func dropBodyRange() {
        guard let range = bodyRange else { return }
        bodyRange = nil
        _ = Glibc.close(range.file.fd)
    }

    private var retired = false
    /// Asked to quit after its current transaction (reload, priority interruption).
    var isRetired: Bool { retired }

    /// After a reload: finish the current transaction, then QUIT (idle: QUIT now).
    func retire() {
        retired = true
        if isIdle || current == nil && session.isReady { quit() }
    }

    /// Closed at once by `shedUnstarted`: not a failure of the host.
    private(set) var shedBeforeTransaction = false
    /// A message is being read or sent on this connection.
    var inTransaction: Bool { current != nil || readingBody }

    /// Over the cluster's fallback share (DeliveryEngine.shedClusterConnections):
    /// quits after the current transaction like `retire`, but one not in a
    /// transaction yet (connecting, waiting on the greeting, EHLO, STARTTLS)
    /// has nothing to finish and closes at once: held at a slow greeting it
    /// would count against the cluster's cap for as long as the receiver
    /// makes it wait.
    func shed() {
        retired = true
        if isIdle || current == nil && session.isReady { quit(); return }
        guard current == nil, !readingBody, messagesSent == 0, !closing else { return }
        shedBeforeTransaction = true
        abandon("closed before its first transaction: over the cluster's fallback share")
    }

    /// Ends the connection now (the daemon's shutdown deadline): the message
    /// in flight completes as a transient failure with `why` (it stays
    /// spooled) and the socket closes without waiting for the peer.
    func abandon(_ why: String) {
        guard !closed else { return }
        closing = true
        client.abandon(why)
    }

    /// Ends the connection politely (QUIT) or, before the session started, at once.
    func quit() {
        guard !closing else { return }
        if client.socket == nil { closing = true }  // still connecting: closed when connect completes
        client.quit()
    }

    private var closeReason: SMTPClientCloseReason?

    private func finishClosed(connectFailure: String?) {
        guard !closed else { return }
        closed = true
        closing = true
        if let t = idleTimer { loop.cancelTimer(t); idleTimer = nil }
        if isIdle { isIdle = false; queue.idleConnections -= 1 }
        dropBodyRange()
        if let item = current {
            // Should not happen (the session completes the message before closing), but never lose it.
            current = nil
            (currentQueue ?? queue).putBack(item)
        }
        engine.connectionClosed(self, reason: closeReason, connectFailure: connectFailure, everReady: everReady)
        releaseIfDone()
    }

    private var released = false

    /// Hands the connection back to the engine once closed and no callback is outstanding.
    private func releaseIfDone() {
        guard closed, !released, !client.hasOperationsInFlight, !readingBody else { return }
        released = true
        // Dropped on a later turn: callers up the stack (a completion's defer) may still use self.
        loop.scheduleTimer(after: 0) { [engine, self] in engine.release(self) }
    }
}
