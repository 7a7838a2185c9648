import PeregrineIO
import PeregrineSMTP

/// Drives an `SMTPServerSession` over an accepted socket: one owned receive
/// buffer, the session's replies written once per input batch (two output
/// buffers ping-pong), an idle timeout through the loop's timers, and close.
///
/// Policy stays with the owner: set `session.delegate`; when it answers
/// `.pending`, call `decide(_:)` / `completeMessage(_:)` here later (on the
/// loop's thread) so the connection flushes and resumes reading.
///
/// Completion closures are created once per connection and stored; the
/// connection keeps itself alive until the socket is closed and every
/// outstanding operation has completed, then calls `onClose`.
public final class SMTPServerConnection<Loop: EventLoop> {
    public let loop: Loop
    public let socket: Socket
    public let session: SMTPServerSession
    /// Called once, after the socket is closed.
    public var onClose: ((SMTPServerConnection<Loop>) -> Void)?
    /// Idle timeout in ns (RFC 5321 §4.5.3.2: the server waits at least 5 minutes).
    public var idleTimeout: UInt64 = 300_000_000_000
    /// Reading pauses while more than this many received bytes wait for a decision.
    public var maxBufferedInput = 1 << 20
    /// TLS for STARTTLS (set before `start()`). Without it an accepted STARTTLS ends the connection.
    public var tlsContext: TLSContext?
    /// Start TLS before the greeting (port-465 style); needs `tlsContext`. Give
    /// that session a configuration with STARTTLS disabled.
    public var implicitTLS = false
    /// Called once the TLS handshake has completed (`tls` has the protocol and cipher).
    public var onTLSEstablished: ((SMTPServerConnection<Loop>) -> Void)?
    /// The TLS layer once STARTTLS was accepted (or from the start with `implicitTLS`).
    public internal(set) var tls: TLSConnection?

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var sendBuffer = ByteBuffer(capacity: 4096)
    private var receiving = false
    var sending = false
    var closeAfterFlush = false
    var closed = false
    private var finished = false
    private var lastActivity: UInt64 = 0
    private var timer: TimerHandle?
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    var onSend: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    /// Self-reference while the socket is in use (released in `finish`).
    private var keepAlive: SMTPServerConnection<Loop>?
    // TLS (see TLS/SMTPServerConnection+TLS.swift).
    var tlsStarting = false
    var closeNotifyQueued = false
    var tlsPlaintext: UnsafeMutableRawBufferPointer?
    var tlsCiphertext: UnsafeMutableRawBufferPointer?
    var tlsOutput = ByteBuffer(capacity: 0)

    public init(loop: Loop, socket: Socket, session: SMTPServerSession, receiveBufferSize: Int = 65536) {
        self.loop = loop
        self.socket = socket
        self.session = session
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
        onReceive = { [unowned self] r in self.received(r) }
        onSend = { [unowned self] r in self.sent(r) }
        onTimer = { [unowned self] in self.timerFired() }
    }

    deinit {
        receiveBuffer.deallocate()
        tlsPlaintext?.deallocate()
        tlsCiphertext?.deallocate()
    }

    /// Greets and starts reading.
    public func start() {
        keepAlive = self
        lastActivity = loop.now
        timer = loop.scheduleTimer(after: idleTimeout, onTimer)
        if implicitTLS {
            guard beginTLS(afterPlaintext: false) else { close(); return }
        }
        apply(session.start())
        readIfWanted()
    }

    /// Supplies a pending decision (see `SMTPServerSession.decide`).
    public func decide(_ decision: SMTPServerDecision) {
        guard !closed else { return }
        apply(session.decide(decision))
        readIfWanted()
    }

    /// Ends the pending end-of-data decision: nil = accepted (250), else the reply.
    public func completeMessage(_ reply: SMTPReply? = nil) {
        decide(reply.map { .reply($0) } ?? .accept)
    }

    /// Closes at once (no more replies).
    public func close() {
        guard !closed else { return }
        closed = true
        if let t = timer { loop.cancelTimer(t); timer = nil }
        session.connectionClosed()
        loop.close(socket)
        finishIfIdle()
    }

    // MARK: Internals

    private func readIfWanted() {
        guard !closed, !closeAfterFlush, !receiving, session.bufferedInputBytes <= maxBufferedInput else { return }
        receiving = true
        loop.receive(socket, into: receiveBuffer, onReceive)
    }

    private func received(_ result: Result<Int, IOError>) {
        receiving = false
        guard !closed else { finishIfIdle(); return }
        switch result {
        case .success(0), .failure:
            close()
        case .success(let n):
            lastActivity = loop.now
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if let tls { receivedCiphertext(bytes, tls) } else { apply(session.receive(bytes)) }
            readIfWanted()
        }
    }

    func apply(_ actions: SMTPServerActions) {
        if actions.shouldStartTLS {
            // The 220 goes out in plain text; every byte received from now on is TLS.
            if tls != nil || !beginTLS(afterPlaintext: true) { closeAfterFlush = true }
        }
        if actions.shouldClose { closeAfterFlush = true }
        flush()
        if closeAfterFlush && !sending { close() }
    }

    func flush() {
        guard !sending, !closed else { return }
        if let tls, !tlsStarting { flushTLS(tls); return }
        guard !session.output.isEmpty else { return }
        session.swapOutput(&sendBuffer)
        sending = true
        // The array storage stays put until `sent` runs: nothing mutates `sendBuffer` meanwhile.
        sendBuffer.withUnsafeReadableBytes { loop.send(socket, $0, onSend) }
    }

    private func sent(_ result: Result<Void, IOError>) {
        sending = false
        guard !closed else { finishIfIdle(); return }
        if case .failure = result { close(); return }
        if tlsStarting && session.output.isEmpty { tlsStarting = false } // the 220 is out
        if !session.output.isEmpty || (tls?.pendingCiphertextBytes ?? 0) > 0 { flush(); if sending { return } }
        if closeAfterFlush { close() }
    }

    private func timerFired() {
        timer = nil
        guard !closed else { return }
        let idle = loop.now &- lastActivity
        if idle >= idleTimeout {
            apply(session.timedOut())
        } else {
            timer = loop.scheduleTimer(after: idleTimeout - idle, onTimer)
        }
    }

    private func finishIfIdle() {
        guard closed, !receiving, !sending, !finished else { return }
        finished = true
        let cb = onClose
        onClose = nil
        cb?(self)
        keepAlive = nil
    }
}
