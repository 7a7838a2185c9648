import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// One injecting SMTP connection: connects, sends messages while the generator
/// grants them, QUITs after messages-per-connection, and reports every reply.
///
/// Memory ceiling (principle 8), as for the daemon's DeliveryConnection: the
/// 16 KiB receive buffer; the reply parser's bounded lines (a flood of
/// replies is a protocol error that closes); output of at most one message
/// (its commands and its body, so `sendMemory` grows to the largest message
/// size asked for, never beyond), since the session writes the next command
/// only in answer to a reply. A target that stops reading stalls the send:
/// the session times the body's send (`--timeout`), and a session that
/// timed out closes its socket even with that send still in flight (it
/// would never complete). Its reconnect backs off (LoadGenerator).
final class LoadConnection<Loop: EventLoop> {
    unowned let generator: LoadGenerator<Loop>
    let loop: Loop
    private var session: SMTPClientSession
    private var socket: Socket?
    private let receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
    private var sendMemory = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
    private var output = ByteBuffer(capacity: 8192)
    private var sending = false
    private var receiving = false
    private var connecting = false
    private(set) var finished = false
    private var timer: TimerHandle?
    private var messagesOnConnection = 0
    private var current: (id: String, started: UInt64, size: Int, sentWall: Int64)?
    private var waitingForGrant = false
    /// STARTTLS for the current connection (`--starttls`).
    private var tls: SMTPClientTLS?
    private var tlsCounted = false
    /// The session ended in a timeout: the send in flight (if any) is what
    /// stalled, so the socket closes without waiting for it.
    private var abandonSend = false
    /// Bounds the wait for a last send (a QUIT) after any other close.
    private var lingerTimer: TimerHandle?
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSent: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!

    init(generator: LoadGenerator<Loop>, loop: Loop) {
        self.generator = generator
        self.loop = loop
        var config = SMTPClientConfiguration(heloName: generator.options.heloName)
        config.usePipelining = generator.options.pipelining
        session = SMTPClientSession(configuration: config)
        onReceive = { [unowned self] in self.received($0) }
        onSent = { [unowned self] in self.sent($0) }
        onTimer = { [unowned self] in self.timer = nil; self.session.timedOut(); self.pump() }
    }

    deinit {
        receiveBuffer.deallocate()
        sendMemory.deallocate()
    }

    var isBusy: Bool { socket != nil || connecting }

    func start() {
        guard !connecting, socket == nil else { return }
        var config = SMTPClientConfiguration(heloName: generator.options.heloName)
        config.usePipelining = generator.options.pipelining
        session = SMTPClientSession(configuration: config)
        messagesOnConnection = 0
        finished = false
        abandonSend = false
        if generator.options.startTLS {
            tls = SMTPClientTLS(policy: .required, context: generator.tlsContext, sessionKey: generator.options.target.description)
            tlsCounted = false
        }
        connecting = true
        loop.connect(to: generator.options.target, from: generator.options.source, timeout: 10_000_000_000) { [unowned self] r in
            self.connecting = false
            switch r {
            case .success(let s):
                self.socket = s
                self.generator.stats.connectionsOpened += 1
                self.session.start()
                self.receive()
                self.pump()
            case .failure(let e):
                self.generator.stats.connectionErrors += 1
                self.generator.stats.lastConnectionError = "\(e)"
                self.generator.connectionEnded(self, failed: true)
            }
        }
    }

    private func receive() {
        guard let s = socket, !receiving else { return }
        receiving = true
        loop.receive(s, into: receiveBuffer, onReceive)
    }

    private func received(_ r: Result<Int, IOError>) {
        receiving = false
        switch r {
        case .success(let n) where n > 0:
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if let tls, tls.isActive {
                if tls.receive(bytes, session: session) { generator.stats.tlsSessions += 1 }
            } else {
                session.receive(bytes)
            }
            pump()
            if socket != nil && !session.isClosed { receive() }
        default:
            session.connectionClosed()
            pump()
        }
        finishIfQuiet()
    }

    /// The generator granted a message (rate and count budget allow one).
    func grant() {
        waitingForGrant = false
        guard session.isReady, socket != nil else { generator.returnGrant(); return }
        let (envelope, id, size) = generator.makeEnvelope()
        current = (id, monotonicNanoseconds(), size, realtimeNanoseconds())
        generator.stats.sent += 1
        session.send(envelope)
        pump()
    }

    /// The count or duration is spent: no message for this connection, it QUITs.
    /// (Granting instead would send one more message under an id already used.)
    func budgetSpent() {
        waitingForGrant = false
        guard session.isReady, socket != nil else { return }
        session.quit()
        pump()
    }

    private func pump() {
        while let e = session.nextEvent() {
            switch e {
            case .setTimer(_, let ns):
                if let t = timer { loop.cancelTimer(t) }
                timer = loop.scheduleTimer(after: min(ns, UInt64(generator.options.timeout * 1e9)), onTimer)
            case .cancelTimer:
                if let t = timer { loop.cancelTimer(t); timer = nil }
            case .ready(let ext):
                if let tls, tls.ready(ext, session: session) {
                    if tls.failure != nil { noteTLSFailure(tls) } // else STARTTLS was sent
                    break
                }
                let cap = generator.options.messagesPerConnection
                if (cap > 0 && messagesOnConnection >= cap) || generator.isDone {
                    session.quit()
                } else if !waitingForGrant {
                    waitingForGrant = true
                    generator.requestGrant(self)
                }
            case .sendBody:
                if let c = current { generator.writeBody(id: c.id, size: c.size, sentWall: c.sentWall) { session.appendBody($0) } }
                session.finishBody()
                session.bodyAwaitsSocket()   // handed over in sent()
            case .messageCompleted(let result):
                messagesOnConnection += 1
                if let c = current {
                    current = nil
                    let reply = result.finalReply ?? result.recipients.first?.reply ?? result.mailReply
                    generator.messageCompleted(id: c.id, started: c.started, sentWall: c.sentWall, reply: reply, result: result)
                }
            case .startTLS(let reply):
                tls?.startTLSReplied(reply, session: session)
            case .closed(let reason):
                if let tls, let c = tls.connection, !c.isHandshakeComplete { noteTLSFailure(tls) }
                if case .timedOut = reason { abandonSend = true }
                if session.failedInPhase != nil {
                    generator.stats.sessionFailures += 1
                    generator.stats.lastSessionFailure = session.failureReason ?? "\(reason)"
                }
            }
        }
        flush()
        if session.isClosed && sending && !abandonSend && lingerTimer == nil && socket != nil {
            lingerTimer = loop.scheduleTimer(after: UInt64(generator.options.timeout * 1e9)) { [unowned self] in
                self.lingerTimer = nil
                self.abandonSend = true
                self.pump()
            }
        }
        if session.isClosed && (!sending || abandonSend), let s = socket {
            if let t = lingerTimer { loop.cancelTimer(t); lingerTimer = nil }
            // With a send in flight the close cancels it; its callback still comes (sent()).
            loop.close(s)
            socket = nil
            if waitingForGrant { generator.cancelGrantRequest(self); waitingForGrant = false }
            finishIfQuiet()
        }
    }

    private func finishIfQuiet() {
        // Once per connection: `received` and `sent` both end here after `pump` may already
        // have; reporting twice made the generator stop with replies still in flight.
        if socket == nil && !receiving && !sending && !connecting && session.isClosed && !finished {
            // Stays set until the next start(): received() and pump() may both
            // get here for one close, and a second connectionEnded would count
            // the connection out twice (the run then stopped before the last reply).
            finished = true
            generator.connectionEnded(self, failed: false, sessionFailed: session.failedInPhase != nil)
        }
    }

    private func noteTLSFailure(_ tls: SMTPClientTLS) {
        guard !tlsCounted else { return }
        tlsCounted = true
        generator.stats.tlsFailures += 1
        generator.stats.lastTLSFailure = tls.failure ?? "TLS handshake did not complete"
    }

    private func flush() {
        guard !sending, let s = socket else { return }
        if let tls, tls.isActive {
            guard let cipher = tls.nextCiphertext(session: session, closing: session.isClosed) else { return }
            sending = true
            loop.send(s, cipher, onSent)
            return
        }
        session.swapOutput(&output)
        guard !output.isEmpty else { return }
        let n = output.readableBytes
        if n > sendMemory.count {
            sendMemory.deallocate()
            sendMemory = .allocate(byteCount: max(n, sendMemory.count * 2), alignment: 16)
        }
        output.withUnsafeReadableBytes { src in sendMemory.copyMemory(from: src) }
        sending = true
        loop.send(s, UnsafeRawBufferPointer(rebasing: sendMemory[0..<n]), onSent)
    }

    private func sent(_ r: Result<Void, IOError>) {
        sending = false
        if case .failure = r { session.connectionClosed() }
        pump()
        if !sending && session.isBodyAwaitingSocket {
            session.bodyHandedToSocket()  // the body is out: now the reply's wait
            pump()
        }
        finishIfQuiet()
    }
}
