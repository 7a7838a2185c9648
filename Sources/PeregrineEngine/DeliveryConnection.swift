import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// One outbound SMTP connection of a queue: connects (bound to the VMTA's
/// source IP, trying the queue's hosts in MX order), drives an
/// `SMTPClientSession`, and asks its queue for work each time the session is
/// ready. Completion closures are created once per connection, not per event.
///
/// Memory ceiling (principle 8): the receive buffer (16 KiB); input beyond
/// it only as the reply parser holds it (a reply of more than its line limit,
/// or a reply nobody asked for, closes the connection as a protocol error, so
/// a receiver flooding replies gains nothing); output is never more than one
/// transaction: its commands (at most max-rcpt-per-transaction RCPTs) and its
/// body (read from the spool, at most the message size) in `sendBuffer`,
/// with one more command batch waiting in `pendingOutput`. The session only
/// produces the next command in answer to a reply, so a receiver that stops
/// reading stops the output growing; the session's per-phase timers
/// (`data-send-timeout` for the body's send, until the socket has taken it,
/// and the rest) then end the session, and a session that timed out closes
/// its socket even with a send in flight (that send would never complete:
/// waiting for it kept the connection, and its max-smtp-out slot, forever).
/// With TLS, OpenSSL holds at most the ciphertext of that same transaction.
final class DeliveryConnection<Loop: EventLoop> {
    unowned let engine: DeliveryEngine<Loop>
    let loop: Loop
    let queue: DeliveryQueue
    let vmta: VirtualMTA
    let hosts: [RouteHost]
    private var hostIndex = 0
    private(set) var socket: Socket?
    var session: SMTPClientSession
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// Bytes for the socket: the session's commands and, written straight in
    /// by the session (no copy through its output), the dot-stuffed body.
    /// Not empty while `!sending` only between a `.sendBody` and the `flush`
    /// that follows it in the same `pump`; cleared when a send completes.
    private let sendBuffer = OwnedBuffer(capacity: 4096)
    private let bodyBuffer = OwnedBuffer(capacity: 8192)
    private var body = UnsafeRawBufferPointer(start: nil, count: 0)
    private var pendingOutput = ByteBuffer(capacity: 1024)
    private var sending = false
    private var receiving = false
    private var closing = false
    private(set) var closed = false
    private var timer: TimerHandle?
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
    var tls: SMTPClientTLS?
    var host: RouteHost?
    /// A TLS handshake failed on this connection: the engine's TLS fallback
    /// handles it, it is not a failure of the host.
    var tlsFailed = false
    /// The receiver handled a transaction on this connection (a reply that is
    /// not a 421): a later 421 is it closing a working connection, not failing.
    var hostReplied = false
    /// Operations whose callbacks are still to come: the engine keeps this
    /// object alive until they have all run (their closures capture it unowned).
    private var connecting = false
    private var readingBody = false

    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSent: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    private var onIdleTimeout: (() -> Void)!
    private var onWaitOver: (() -> Void)!
    private var onBodyRead: ((Result<UnsafeRawBufferPointer, IOError>) -> Void)!
    private var onLingerOver: (() -> Void)!

    init(engine: DeliveryEngine<Loop>, loop: Loop, queue: DeliveryQueue, vmta: VirtualMTA, hosts: [RouteHost],
         configuration: SMTPClientConfiguration) {
        self.engine = engine
        self.loop = loop
        self.queue = queue
        self.vmta = vmta
        self.hosts = hosts
        self.session = SMTPClientSession(configuration: configuration)
        self.receiveBuffer = .allocate(byteCount: 16384, alignment: 16)
        onReceive = { [unowned self] r in self.received(r) }
        onSent = { [unowned self] r in self.sent(r) }
        onTimer = { [unowned self] in self.timer = nil; self.session.timedOut(); self.pump() }
        // askForWork re-arms these on every idle answer (each kick asks every idle connection).
        onIdleTimeout = { [unowned self] in
            self.idleTimer = nil
            if self.isIdle { self.quit() }
        }
        onWaitOver = { [unowned self] in self.idleTimer = nil; self.askForWork() }
        onBodyRead = { [unowned self] result in self.bodyRead(result) }
        onLingerOver = { [unowned self] in self.timer = nil; self.finishClose() }
    }

    deinit { receiveBuffer.deallocate() }

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
        connecting = true
        loop.connect(to: host.address, from: vmta.sourceAddress, timeout: queue.policy.connectTimeout.nanoseconds) { [unowned self] result in
            self.connecting = false
            defer { self.releaseIfDone() }
            switch result {
            case .success(let s):
                if self.closing { self.loop.close(s); self.finishClosed(connectFailure: nil); return }
                self.socket = s
                self.host = host
                self.tls = self.engine.tls.client(for: host, policy: self.queue.policy, now: self.loop.now)
                self.attemptInfo = DeliveryAttemptInfo(sourceAddress: self.loop.localAddress(of: s), destination: host.address,
                                                       destinationName: host.name, esmtp: false)
                self.session.start()
                self.receive()
                self.pump()
            case .failure(let e):
                if self.closing { self.finishClosed(connectFailure: nil); return }
                let why = "\(host.name) (\(host.address)): \(e)"
                let isNew = self.engine.hostFailed(host, vmta: self.vmta.name, queue: self.queue, reason: why)
                let now = self.loop.now
                if isNew, self.hosts[self.hostIndex...].contains(where: { self.engine.isUsable($0, vmta: self.vmta.name, now: now) }) {
                    self.engine.movedOn(from: host, queue: self.queue, reason: "\(e)")
                }
                self.connectNext(lastError: why)
            }
        }
    }

    // MARK: Driving the session

    private func receive() {
        guard let s = socket, !receiving, !closed else { return }
        receiving = true
        loop.receive(s, into: receiveBuffer, onReceive)
    }

    private func received(_ result: Result<Int, IOError>) {
        receiving = false
        defer { releaseIfDone() }
        switch result {
        case .success(let n) where n > 0:
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if let tls, tls.isActive { tlsReceive(bytes, tls) } else { session.receive(bytes) }
            pump()
            if !session.isClosed { receive() }
        default:
            session.connectionClosed()
            pump()
        }
    }

    /// Handles the session's events and writes its output.
    private func pump() {
        while let event = session.nextEvent() {
            switch event {
            case .setTimer(_, let ns):
                if let t = timer { loop.cancelTimer(t) }
                timer = loop.scheduleTimer(after: ns, onTimer)
            case .cancelTimer:
                if let t = timer { loop.cancelTimer(t); timer = nil }
            case .ready(let ext):
                everReady = true
                attemptInfo?.esmtp = ext.isESMTP
                if let tls, tlsReady(ext, tls) { break }
                askForWork()
            case .startTLS(let reply):
                tls?.startTLSReplied(reply, session: session)
            case .sendBody:
                writeBody()
                body = UnsafeRawBufferPointer(start: nil, count: 0)
            case .messageCompleted(let result):
                if let item = current {
                    current = nil
                    messagesSent += 1
                    engine.observer.transactionCompleted(currentQueue ?? queue, nanoseconds: loop.now &- transactionStarted)
                    engine.complete(item, from: currentQueue ?? queue, result: result, on: self, info: attemptInfo)
                }
            case .closed(let reason):
                if let tls { tlsSessionClosed(tls) }
                flush()
                closeAfterFlush(reason: reason)
            }
        }
        flush()
    }

    /// The body after 354: dot-stuffed by the session straight into
    /// `sendBuffer`, after whatever is already queued there. Over TLS, or
    /// while a send is in flight (the buffer belongs to the loop then), it
    /// goes through the session's output as before.
    private func writeBody() {
        // Timed by data-send-timeout until the socket has taken it (`sent`).
        defer { session.bodyAwaitsSocket() }
        if sending || tls?.isActive == true {
            session.appendBody(body)
            session.finishBody()
            return
        }
        let start = sendBuffer.count
        sendBuffer.reserve(start + session.writeBodyCapacity(forChunk: body.count))
        let room = UnsafeMutableRawBufferPointer(rebasing: sendBuffer.memory[start...])
        let written = session.writeBody(body, last: true, into: room)
        sendBuffer.setCount(start + written)
    }

    private func flush() {
        guard !sending, let s = socket, !closed else { return }
        if let tls, tls.isActive {
            guard let cipher = tls.nextCiphertext(session: session, closing: session.isClosed) else { return }
            sending = true
            loop.send(s, cipher, onSent)
            return
        }
        if !session.output.isEmpty {
            session.swapOutput(&pendingOutput)
            pendingOutput.withUnsafeReadableBytes { sendBuffer.append($0) }
        }
        guard !sendBuffer.isEmpty else { return }
        sending = true
        loop.send(s, sendBuffer.bytes, onSent)
    }

    private func sent(_ result: Result<Void, IOError>) {
        sending = false
        sendBuffer.clear()
        defer { releaseIfDone() }
        switch result {
        case .success:
            if closing { finishClose(); return }
            flush()
            if !sending && session.isBodyAwaitingSocket {
                session.bodyHandedToSocket()  // the body is out: now the wait for its reply
                pump()
            }
        case .failure:
            session.connectionClosed()
            pump()
            if closing { finishClose() }
        }
    }

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
        engine.bodySource.readBody(of: message, into: bodyBuffer.memory, onBodyRead)
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
            let rcpts = item.recipients.map { message.recipients[$0].address }
            // A VERP item holds one recipient (DeliveryEngine.submit).
            let mailFrom = message.verp && rcpts.count == 1
                ? VERP.returnPath(sender: message.sender, recipient: rcpts[0]) : message.sender
            let envelope = SMTPClientEnvelope(mailFrom: mailFrom, recipients: rcpts, size: message.bodySize,
                                              envelopeID: message.envId,
                                              ret: message.ret == .unspecified ? nil : message.ret == .full ? .full : .headers)
            if session.send(envelope) {
                transactionStarted = loop.now
                pump()
            } else {
                current = nil
                (currentQueue ?? queue).putBack(item)
                quit()
            }
        case .failure(let e):
            // The body cannot be read: a local problem, not the receiver's.
            current = nil
            engine.bodyUnreadable(item, from: currentQueue ?? queue, error: e)
            askForWork()
        }
    }

    private var retired = false
    /// Asked to quit after its current transaction (reload, priority interruption).
    var isRetired: Bool { retired }

    /// After a reload: finish the current transaction, then QUIT (idle: QUIT now).
    func retire() {
        retired = true
        if isIdle || current == nil && session.isReady { quit() }
    }

    /// Ends the connection now (the daemon's shutdown deadline): the message
    /// in flight completes as a transient failure with `why` (it stays
    /// spooled) and the socket closes without waiting for the peer.
    func abandon(_ why: String) {
        guard !closed else { return }
        if socket == nil { closing = true; return }  // still connecting: closed when connect completes
        session.abandon(why)
        pump()
        if !closed { finishClose() }
    }

    /// Ends the connection politely (QUIT) or, before the session started, at once.
    func quit() {
        guard !closing else { return }
        if socket == nil { closing = true; return }  // still connecting: closed when connect completes
        session.quit()
        pump()
    }

    private var closeReason: SMTPClientCloseReason?

    private func closeAfterFlush(reason: SMTPClientCloseReason) {
        closeReason = reason
        closing = true
        guard sending else { finishClose(); return }
        // A timeout: the send in flight is (or waits behind) what stalled;
        // it would never complete. Otherwise (a QUIT going out) wait for it,
        // but not beyond the QUIT timeout.
        if case .timedOut = reason { finishClose(); return }
        if let t = timer { loop.cancelTimer(t) }
        timer = loop.scheduleTimer(after: session.configuration.timeouts.quit, onLingerOver)
    }

    private func finishClose() {
        guard !closed else { return }
        if let s = socket { loop.close(s) }
        socket = nil
        finishClosed(connectFailure: nil)
    }

    private func finishClosed(connectFailure: String?) {
        guard !closed else { return }
        closed = true
        closing = true
        if let t = timer { loop.cancelTimer(t); timer = nil }
        if let t = idleTimer { loop.cancelTimer(t); idleTimer = nil }
        if isIdle { isIdle = false; queue.idleConnections -= 1 }
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
        guard closed, !released, !receiving, !sending, !connecting, !readingBody else { return }
        released = true
        // Dropped on a later turn: callers up the stack (a completion's defer) may still use self.
        loop.scheduleTimer(after: 0) { [engine, self] in engine.release(self) }
    }
}
