import PeregrineCore
import PeregrineIO
import PeregrineSMTP

/// One SMTP connection to the sink: drives an `SMTPServerSession` over a loop
/// socket, asks the policy at every phase, delays answers with loop timers
/// (never blocking), scans the header section for `X-Loadgen-Id`.
///
/// Buffers are owned by the connection and reused: one receive buffer, one
/// send buffer that grows only when a reply batch is larger than it.
final class SinkSMTPConnection<Loop: EventLoop>: SMTPServerSessionDelegate {
    let loop: Loop
    let socket: Socket
    let shared: SinkShared
    let conn: SinkConnection
    let session: SMTPServerSession
    unowned let server: SinkServer<Loop>

    static var receiveCapacity: Int { 64 * 1024 }
    static var maxBufferedInput: Int { 1 << 20 }
    static var minimumDelay: UInt64 { 500_000 }

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var sendBuffer: UnsafeMutableRawBufferPointer
    private var sendCount = 0
    private var output = ByteBuffer(capacity: 1024)

    var sending = false
    private var receiving = false
    var closeAfterSend = false
    var closed = false
    private var released = false
    var dropNow = false
    private var firstBodyChunk = true
    private var scanner = SinkHeaderScanner()
    private let scanHeaders: Bool
    private var pendingDecision: SMTPServerDecision?
    private var pendingClose = false
    private var pendingTimer: TimerHandle?
    private var greetingDecision: SinkDecision = .accept
    private var greetingLatency: UInt64 = 0

    // Stored completions: no closure allocation per event.
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    var onSend: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    private var onIdleTimer: (() -> Void)!
    private var idleTimer: TimerHandle?
    private var lastActivity: UInt64 = 0
    // STARTTLS (SinkSMTPConnection+TLS.swift).
    var tls: TLSConnection?
    var tlsStarting = false
    var tlsBroken = false
    var closeNotifyQueued = false
    var tlsPlaintext: UnsafeMutableRawBufferPointer?
    var tlsCiphertext: UnsafeMutableRawBufferPointer?
    var tlsOutput = ByteBuffer(capacity: 0)

    init(loop: Loop, socket: Socket, shared: SinkShared, conn: SinkConnection,
         configuration: SMTPServerConfiguration, server: SinkServer<Loop>) {
        self.loop = loop
        self.socket = socket
        self.shared = shared
        self.conn = conn
        self.server = server
        self.session = SMTPServerSession(configuration: configuration)
        self.scanHeaders = shared.isRecordingIds
        receiveBuffer = .allocate(byteCount: Self.receiveCapacity, alignment: 16)
        sendBuffer = .allocate(byteCount: 4096, alignment: 16)
        session.delegate = self
        onReceive = { [unowned self] r in self.received(r) }
        onSend = { [unowned self] r in self.sent(r) }
        onTimer = { [unowned self] in self.timerFired() }
        onIdleTimer = { [unowned self] in self.idleCheck() }
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
        tlsPlaintext?.deallocate()
        tlsCiphertext?.deallocate()
    }

    /// Greets (possibly after the banner delay) and starts reading.
    func start(greeting: SinkDecision, latency: UInt64) {
        greetingDecision = greeting
        greetingLatency = latency
        lastActivity = loop.now
        let idle = conn.provider.idleNanos
        if idle > 0 { idleTimer = loop.scheduleTimer(after: idle, onIdleTimer) }
        handle(session.start())
        receiveMore()
    }

    // MARK: Decisions

    static func map(_ d: SinkDecision) -> SMTPServerDecision {
        switch d {
        case .accept, .drop: return .accept
        case .reply(let r):
            return .reply(SMTPReply(code: r.code, enhancedCode: r.enhanced.flatMap { EnhancedStatusCode($0) }, lines: r.lines))
        }
    }

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        let now = loop.now
        let policy = shared.policy
        let c = conn
        var decision: SinkDecision = .accept
        var latency: UInt64 = 0
        switch request {
        case .connection:
            // Decided at accept time. A refused greeting always ends the connection.
            decision = greetingDecision
            latency = greetingLatency
            return answer(Self.map(decision), close: decision != .accept, after: latency)
        case .helo:
            shared.lock.withLock {
                decision = policy.helo(c, now: now)
                latency = policy.latency(c, .helo)
            }
        case .mailFrom(let m):
            if scanHeaders { scanner.reset() }
            firstBodyChunk = true
            shared.lock.withLock {
                decision = policy.mailFrom(c, sender: m.reversePath, now: now)
                latency = policy.latency(c, .mail)
            }
        case .rcptTo(let r):
            shared.lock.withLock {
                decision = policy.rcptTo(c, recipient: r.forwardPath, now: now)
                latency = policy.latency(c, .rcpt)
            }
        case .endOfData(let info):
            shared.lock.withLock {
                decision = policy.endOfData(c, size: info.size, now: now)
                latency = policy.latency(c, .data)
            }
            if decision == .accept && scanHeaders { shared.record(id: scanner.trimmedValue) }
        case .auth:
            return .accept
        case .startTLS:
            guard shared.tlsContext != nil, conn.provider.profile.startTLS != .refuse else {
                return .reply(SMTPReply(454, "4.7.0", "TLS not available due to temporary reason"))
            }
            return .accept
        }
        var close = false
        if case .reply(let r) = decision, r.close { close = true }
        return answer(Self.map(decision), close: close, after: latency)
    }

    /// Answers now, or after `latency` through a loop timer (`.pending` meanwhile).
    private func answer(_ d: SMTPServerDecision, close: Bool, after latency: UInt64) -> SMTPServerDecision {
        // Loop timers tick every millisecond: a delay under half a tick (a
        // scaled-down CI latency) is answered at once rather than rounded up.
        if latency < Self.minimumDelay {
            if close { closeAfterSend = true }
            return d
        }
        pendingDecision = d
        pendingClose = close
        pendingTimer = loop.scheduleTimer(after: latency, onTimer)
        return .pending
    }

    private func timerFired() {
        pendingTimer = nil
        guard !closed, let d = pendingDecision else { return }
        pendingDecision = nil
        if pendingClose { closeAfterSend = true }
        handle(session.decide(d))
        receiveMore()
    }

    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        if firstBodyChunk {
            firstBodyChunk = false
            let now = loop.now
            let d = shared.lock.withLock { shared.policy.dataCommand(conn, now: now) }
            if d == .drop { dropNow = true }
        }
        if scanHeaders { scanner.scan(chunk) }
    }

    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) {
        shared.lock.withLock { shared.policy.reset(conn) }
        if scanHeaders { scanner.reset() }
        firstBodyChunk = true
    }

    // MARK: I/O

    func receiveMore() {
        guard !receiving, !closed, !session.isClosed else { return }
        // Back-pressure: stop reading while a decision waits and a lot is buffered.
        if session.isAwaitingDecision && session.bufferedInputBytes >= Self.maxBufferedInput { return }
        receiving = true
        loop.receive(socket, into: receiveBuffer, onReceive)
    }

    private func received(_ result: Result<Int, IOError>) {
        receiving = false
        guard !closed else { releaseIfIdle(); return }
        switch result {
        case .failure, .success(0):
            finish()
        case .success(let n):
            lastActivity = loop.now
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if tls != nil || tlsBroken {
                receivedCiphertext(bytes)
                receiveMore()
                return
            }
            let actions = session.receive(bytes)
            if dropNow {
                // A drop during DATA: no reply, the connection just goes away.
                finish()
                return
            }
            handle(actions)
            receiveMore()
        }
    }

    func handle(_ actions: SMTPServerActions) {
        if actions.shouldStartTLS { beginTLS() }
        if actions.shouldClose || session.isClosed { closeAfterSend = true }
        if actions.shouldFlush { flush() }
        else if closeAfterSend && !sending { finish() }
    }

    func flush() {
        guard !sending, !closed else { return }
        if let tls, !tlsStarting { flushTLS(tls); return }
        session.swapOutput(&output)
        let n = output.readableBytes
        if n == 0 {
            if closeAfterSend { finish() }
            return
        }
        if n > sendBuffer.count {
            sendBuffer.deallocate()
            sendBuffer = .allocate(byteCount: max(n, sendBuffer.count * 2), alignment: 16)
        }
        output.withUnsafeReadableBytes { src in
            if let s = src.baseAddress, let d = sendBuffer.baseAddress { d.copyMemory(from: s, byteCount: n) }
        }
        sendCount = n
        sending = true
        loop.send(socket, UnsafeRawBufferPointer(rebasing: sendBuffer[0..<n]), onSend)
    }

    private func sent(_ result: Result<Void, IOError>) {
        sending = false
        guard !closed else { releaseIfIdle(); return }
        if case .failure = result { finish(); return }
        if tlsStarting && session.output.isEmpty { tlsStarting = false } // the 220 is out
        if !session.output.isEmpty || (tls?.pendingCiphertextBytes ?? 0) > 0 { flush(); if sending { return } }
        if closeAfterSend { finish() }
    }

    /// One timer per connection, re-armed for the remaining time rather than
    /// moved on every read: no timer work per received chunk.
    private func idleCheck() {
        idleTimer = nil
        guard !closed else { return }
        let idle = conn.provider.idleNanos
        let quiet = loop.now &- lastActivity
        if quiet < idle || session.isAwaitingDecision || sending {
            idleTimer = loop.scheduleTimer(after: quiet < idle ? idle - quiet : idle, onIdleTimer)
            return
        }
        shared.lock.withLock { shared.policy.timedOut(conn) }
        handle(session.timedOut())
    }

    /// Closes the socket and releases the policy's connection slot.
    func finish() {
        guard !closed else { return }
        closed = true
        if let t = pendingTimer { loop.cancelTimer(t); pendingTimer = nil }
        if let t = idleTimer { loop.cancelTimer(t); idleTimer = nil }
        session.connectionClosed()
        shared.lock.withLock { shared.policy.disconnect(conn) }
        loop.close(socket)
        releaseIfIdle()
    }

    /// The loop owns our buffers until every outstanding operation called
    /// back (even after close), so the server lets go of us only then.
    private func releaseIfIdle() {
        guard closed, !receiving, !sending, !released else { return }
        released = true
        server.connectionFinished(self)
    }

    /// Server shutdown.
    func forceClose() { finish() }
}
