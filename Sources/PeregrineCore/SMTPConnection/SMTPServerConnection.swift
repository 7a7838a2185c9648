import PeregrineIO
import PeregrineSMTP

/// Drives an `SMTPServerSession` over an accepted socket: the one glue class
/// of the daemon's injection listener and of peregrine-sink. One owned
/// receive buffer, the session's replies written once per input batch from
/// an owned send buffer, an idle timeout through the loop's timers,
/// STARTTLS / implicit TLS through `TLSConnection`, and close.
///
/// Policy stays with the owner: the session's delegate answers the SMTP
/// decisions (`.pending`, then `decide(_:)` / `completeMessage(_:)` here
/// later, on the loop's thread); `handler` gets the connection-level hooks.
/// `close()` and `closeAfterNextReply()` may be called from any callback.
///
/// Completion closures are created once per connection and stored; the
/// connection keeps itself alive until the socket is closed and every
/// outstanding operation has completed, then calls `onClose`.
public final class SMTPServerConnection<Loop: EventLoop> {
    public let loop: Loop
    public let socket: Socket
    public let session: SMTPServerSession
    /// Connection-level hooks (TLS, timeout, close); held until `onClose` ran.
    public var handler: (any SMTPServerConnectionHandler)?
    /// Called once, after the socket is closed and no operation is outstanding.
    public var onClose: ((SMTPServerConnection<Loop>) -> Void)?
    /// How long (ns) the client may stay silent before the session's 421;
    /// 0: no timeout. RFC 5321 §4.5.3.2: a server waits at least 5 minutes.
    /// Time the owner spends on a pending decision does not count.
    public var idleTimeout: UInt64 = 300_000_000_000
    /// Reading pauses while more than this many received bytes wait for a decision.
    public var maxBufferedInput = 1 << 20
    /// TLS for STARTTLS (set before `start()`). Without it an accepted STARTTLS ends the connection.
    public var tlsContext: TLSContext?
    /// Start TLS before the greeting (port-465 style); needs `tlsContext`. Give
    /// that session a configuration with STARTTLS disabled.
    public var implicitTLS = false
    /// The TLS layer once STARTTLS was accepted (or from the start with `implicitTLS`).
    public internal(set) var tls: TLSConnection?

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// The bytes of the send in flight: owned memory whose address stays put
    /// until `sent` runs, because nothing touches it while `sending`.
    let sendBuffer = OwnedBuffer(capacity: 4096)
    /// Takes the session's replies (it swaps with `session.output`: no
    /// allocation) before they are copied into `sendBuffer` or encrypted.
    var replyBatch = ByteBuffer(capacity: 1024)
    private var receiving = false
    var sending = false
    var closeAfterFlush = false
    var closed = false
    private var finished = false
    /// True during a call into the session, whose delegate callbacks may ask to close.
    private var inSession = false
    private var closeRequested = false
    private var lastActivity: UInt64 = 0
    private var timer: TimerHandle?
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSend: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    /// Self-reference while the socket is in use (released in `finishIfIdle`).
    private var keepAlive: SMTPServerConnection<Loop>?
    // TLS (see TLS/SMTPServerConnection+TLS.swift).
    var tlsStarting = false
    var closeNotifyQueued = false
    var tlsPlaintext: UnsafeMutableRawBufferPointer?
    /// `SMTPServerTLSStart.answerInPlaintext`: armed at STARTTLS, due once the client's TLS bytes came.
    var tlsRefusal: [UInt8]?
    var tlsRefusalDue = false

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
    }

    /// Greets and starts reading.
    public func start() {
        keepAlive = self
        lastActivity = loop.now
        if idleTimeout > 0 { timer = loop.scheduleTimer(after: idleTimeout, onTimer) }
        if implicitTLS {
            guard beginTLS(afterPlaintext: false) else { close(); return }
        }
        inSession = true
        let actions = session.start()
        inSession = false
        settle(actions)
        readIfWanted()
    }

    /// Supplies a pending decision (see `SMTPServerSession.decide`).
    public func decide(_ decision: SMTPServerDecision) {
        guard !closed else { return }
        if inSession {
            // From inside a delegate callback: the session takes it as the
            // callback's answer, and the call in progress applies the outcome.
            session.decide(decision)
            return
        }
        inSession = true
        let actions = session.decide(decision)
        inSession = false
        settle(actions)
        readIfWanted()
    }

    /// Ends the pending end-of-data decision: nil = accepted (250), else the reply.
    public func completeMessage(_ reply: SMTPReply? = nil) {
        decide(reply.map { .reply($0) } ?? .accept)
    }

    /// Closes once the replies queued by then are written, e.g. after a 421:
    /// call it from the decision callback that answers with that reply, or
    /// before `decide(_:)` supplies it. Nothing more is read.
    public func closeAfterNextReply() {
        guard !closed else { return }
        closeAfterFlush = true
    }

    /// Closes at once (no more replies). Inside a session callback (a body
    /// chunk, a decision) the close waits until the session has returned, so
    /// the session is never torn down in the middle of its own work.
    public func close() {
        guard !closed else { return }
        if inSession { closeRequested = true; return }
        closed = true
        closeRequested = false
        if let t = timer { loop.cancelTimer(t); timer = nil }
        session.connectionClosed()
        loop.close(socket)
        handler?.serverConnectionDidClose()
        finishIfIdle()
    }

    // MARK: Internals

    private func readIfWanted() {
        guard !closed, !closeAfterFlush, !receiving, !session.isClosed,
              session.bufferedInputBytes <= maxBufferedInput else { return }
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
            if tls != nil || tlsRefusal != nil {
                receivedCiphertext(bytes)
            } else {
                receivePlaintext(bytes)
            }
            readIfWanted()
        }
    }

    /// Feeds the session (from the socket, or decrypted).
    func receivePlaintext(_ bytes: UnsafeRawBufferPointer) {
        inSession = true
        let actions = session.receive(bytes)
        inSession = false
        settle(actions)
    }

    /// After a call into the session: the close a callback asked for, or what the session asks for.
    private func settle(_ actions: SMTPServerActions) {
        if closeRequested { close(); return }
        if actions.shouldStartTLS { startTLS() }
        if actions.shouldClose { closeAfterFlush = true }
        flush()
        if closeAfterFlush && !sending { close() }
    }

    func flush() {
        guard !sending, !closed else { return }
        if tlsRefusalDue, let answer = tlsRefusal {
            tlsRefusal = nil
            tlsRefusalDue = false
            sendBuffer.clear()
            answer.withUnsafeBytes { sendBuffer.append($0) }
            sendOwnedBuffer()
            return
        }
        if let tls, !tlsStarting { flushTLS(tls); return }
        guard !session.output.isEmpty else { return }
        session.swapOutput(&replyBatch)
        sendBuffer.clear()
        replyBatch.withUnsafeReadableBytes { sendBuffer.append($0) }
        replyBatch.clear()
        sendOwnedBuffer()
    }

    /// Sends `sendBuffer`; it is not touched again until `sent` runs.
    func sendOwnedBuffer() {
        sending = true
        loop.send(socket, sendBuffer.bytes, onSend)
    }

    private func sent(_ result: Result<Void, IOError>) {
        sending = false
        guard !closed else { finishIfIdle(); return }
        if case .failure = result { close(); return }
        lastActivity = loop.now
        if tlsStarting && session.output.isEmpty { tlsStarting = false } // the 220 is out
        if !session.output.isEmpty || tlsRefusalDue || (tls?.pendingCiphertextBytes ?? 0) > 0 {
            flush()
            if sending { return }
        }
        if closeAfterFlush { close() }
    }

    /// One timer per connection, re-armed for the remaining time rather than
    /// moved on every read: no timer work per received chunk.
    private func timerFired() {
        timer = nil
        guard !closed else { return }
        let quiet = loop.now &- lastActivity
        if quiet < idleTimeout || (session.isAwaitingDecision && !sending) {
            timer = loop.scheduleTimer(after: quiet < idleTimeout ? idleTimeout - quiet : idleTimeout, onTimer)
            return
        }
        if sending {
            // The client has not read a reply for a whole timeout: a 421 could not get through either.
            close()
            return
        }
        handler?.serverConnectionWillTimeOut()
        guard !closed else { return }
        inSession = true
        let actions = session.timedOut()
        inSession = false
        settle(actions)
    }

    private func finishIfIdle() {
        guard closed, !receiving, !sending, !finished else { return }
        finished = true
        let cb = onClose
        onClose = nil
        cb?(self)
        handler = nil
        keepAlive = nil
    }
}
