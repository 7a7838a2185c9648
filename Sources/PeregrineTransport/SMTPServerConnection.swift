import PeregrineIO
import PeregrineSMTP
import PeregrineTLS

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
///
/// Memory ceiling (principle 8), per connection, whatever the peer does:
/// - fixed: the receive buffer (64 KiB), the send memory (16 KiB), and with
///   TLS one plaintext buffer (16 KiB) plus OpenSSL's own record buffers;
/// - input: at most `maxBufferedInput` plus one receive waiting in the
///   session while a decision is pending, one command line (512 B);
/// - unsent output (`unsentOutputBytes`): at most `unsentOutputCeiling`,
///   about 2 × (`maxPendingOutput` + one reply) + the send memory
///   (≈ 146 KiB with the defaults). The session stops processing commands
///   once `maxPendingOutput` reply bytes wait, and reading stops while the
///   session holds input back, so a client that pipelines megabytes without
///   reading its replies is paused rather than buffered; with TLS, replies
///   are encrypted only once OpenSSL's ciphertext is down to one send.
///   A client that still does not read is closed once no send has completed
///   for `idleTimeout` (between one and two timeouts after its last progress).
/// - the DATA body is the handler's (the daemon bounds it by max-message-size).
/// `sessionTimeout` bounds the whole session's time (a slowloris that sends
/// a byte just often enough to keep `idleTimeout` away).
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
    /// How long (ns) the whole session may last; 0: no limit. At the deadline
    /// the session gets 421 4.4.2 and is closed (an end-of-data decision in
    /// progress is waited for, so an accepted message still gets its 250).
    public var sessionTimeout: UInt64 = 0
    /// The most unsent reply bytes this connection can hold (see the type's
    /// comment): 2 × (the session's `maxPendingOutput` + its longest reply)
    /// + the send memory, + 1 KiB of TLS record overhead once TLS is on.
    public var unsentOutputCeiling: Int {
        2 * (session.configuration.maxPendingOutput + SMTPServerSession.longestOwnReply) + sendMemory.count
            + (tls == nil ? 0 : 1024)
    }
    /// Reply bytes produced but not yet handed to the socket (the session's
    /// output, the batch being sent, TLS ciphertext waiting in OpenSSL).
    public var unsentOutputBytes: Int {
        replyBatchCount - replyBatchSent + session.output.readableBytes + (tls?.pendingCiphertextBytes ?? 0)
    }
    /// The highest `unsentOutputBytes` seen (checked after every input batch).
    public private(set) var peakUnsentOutputBytes = 0
    /// TLS for STARTTLS (set before `start()`). Without it an accepted STARTTLS ends the connection.
    public var tlsContext: TLSContext?
    /// Start TLS before the greeting (port-465 style); needs `tlsContext`. Give
    /// that session a configuration with STARTTLS disabled.
    public var implicitTLS = false
    /// The TLS layer once STARTTLS was accepted (or from the start with `implicitTLS`).
    public internal(set) var tls: TLSConnection?

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// The bytes of the send in flight: memory the connection owns from init
    /// to deinit (deinit comes only after every send completed), written only
    /// while no send is in flight. A `let` pointer rather than an
    /// `OwnedBuffer`: the hot path then has no class-property accesses to
    /// check for exclusivity at run time (measured with callgrind).
    let sendMemory: UnsafeMutableRawBufferPointer
    /// Takes the session's replies (it swaps with `session.output`: no
    /// allocation) before they are copied into `sendMemory` or encrypted.
    var replyBatch = ByteBuffer(capacity: 1024)
    /// The size of `replyBatch` and how much of it was copied out already (a
    /// batch larger than `sendMemory` goes out in parts). Plain integers, so
    /// that checking for unsent replies does not touch the batch.
    var replyBatchCount = 0
    var replyBatchSent = 0
    private var receiving = false
    var sending = false
    var closeAfterFlush = false
    var closed = false
    private var finished = false
    /// True during a call into the session, whose delegate callbacks may ask to close.
    private var inSession = false
    private var closeRequested = false
    private var lastActivity: UInt64 = 0
    private var startedAt: UInt64 = 0
    private var sessionTimer: TimerHandle?
    private var onSessionTimer: (() -> Void)!
    /// The owner's shutdown drain deadline (`drain(_:deadline:)`).
    private var drainTimer: TimerHandle?
    /// Counts completed sends, so that the idle timer can tell a client that stopped reading without a clock read per send.
    private var sendsCompleted: UInt64 = 0
    private var sendsAtLastTimer: UInt64 = 0
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
    /// `tls` or `tlsRefusal` is set: received bytes are not for the session directly.
    var encrypted = false

    public init(loop: Loop, socket: Socket, session: SMTPServerSession, receiveBufferSize: Int = 65536,
                sendBufferSize: Int = 16384) {
        self.loop = loop
        self.socket = socket
        self.session = session
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
        sendMemory = .allocate(byteCount: max(sendBufferSize, 512), alignment: 16)
        onReceive = { [unowned self] r in self.received(r) }
        onSend = { [unowned self] r in self.sent(r) }
        onTimer = { [unowned self] in self.timerFired() }
        onSessionTimer = { [unowned self] in self.sessionTimerFired() }
    }

    deinit {
        receiveBuffer.deallocate()
        sendMemory.deallocate()
        tlsPlaintext?.deallocate()
    }

    /// Greets and starts reading.
    public func start() {
        keepAlive = self
        lastActivity = loop.now
        startedAt = lastActivity
        if idleTimeout > 0 { timer = loop.scheduleTimer(after: idleTimeout, onTimer) }
        if sessionTimeout > 0 { sessionTimer = loop.scheduleTimer(after: sessionTimeout, onSessionTimer) }
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
        if let t = sessionTimer { loop.cancelTimer(t); sessionTimer = nil }
        if let t = drainTimer { loop.cancelTimer(t); drainTimer = nil }
        session.connectionClosed()
        loop.close(socket)
        handler?.serverConnectionDidClose()
        finishIfIdle()
    }

    // MARK: Internals

    private func readIfWanted() {
        // Not while the session holds commands back because its replies are
        // not read (`isOutputFull`, or input it could not process yet): what
        // the client pipelines waits in its socket, not in our memory.
        guard !closed, !closeAfterFlush, !receiving, !session.isClosed, !session.isOutputFull,
              session.bufferedInputBytes <= maxBufferedInput,
              session.isAwaitingDecision || session.bufferedInputBytes == 0 else { return }
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
            if encrypted {
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
        let unsent = unsentOutputBytes
        if unsent > peakUnsentOutputBytes { peakUnsentOutputBytes = unsent }
        flush()
        if closeAfterFlush && !sending { close() }
    }

    /// Input the session held back while its output was full: processed once
    /// the output was taken (after a send completed).
    private func resumeHeldInput() {
        guard !closed, !inSession, !session.isAwaitingDecision, !session.isOutputFull,
              session.bufferedInputBytes > 0 else { return }
        inSession = true
        let actions = session.processBufferedInput()
        inSession = false
        settle(actions)
    }

    func flush() {
        guard !sending, !closed else { return }
        if tlsRefusalDue {
            tlsRefusalDue = false
            let n = tlsRefusal.map { answer in answer.withUnsafeBytes { copyToSendMemory($0) } } ?? 0
            tlsRefusal = nil
            if n > 0 { send(count: n) }
            return
        }
        if let tls, !tlsStarting { flushTLS(tls); return }
        let (size, offset, n) = Self.stageReplies(&replyBatch, alreadySent: replyBatchSent, session: session, into: sendMemory)
        replyBatchCount = size
        replyBatchSent = offset + n
        if n > 0 { send(count: n) }
    }

    /// Takes the session's output once the last batch is out, and copies the
    /// unsent part of the batch (what fits) into `memory`. Returns the batch
    /// size, where the copy started and how much it copied. One function on
    /// an `inout` batch: one exclusivity access for the whole step.
    static func stageReplies(_ batch: inout ByteBuffer, alreadySent: Int, session: SMTPServerSession,
                             into memory: UnsafeMutableRawBufferPointer) -> (size: Int, offset: Int, copied: Int) {
        var offset = alreadySent
        if offset >= batch.readableBytes {
            session.swapOutput(&batch)
            offset = 0
        }
        let size = batch.readableBytes
        let n = min(size - offset, memory.count)
        if n > 0 {
            batch.withUnsafeReadableBytes { src in
                if let s = src.baseAddress, let d = memory.baseAddress { d.copyMemory(from: s + offset, byteCount: n) }
            }
        }
        return (size, offset, n)
    }

    /// Copies as much of `bytes` as fits into `sendMemory`; returns how much. Only while not `sending`.
    func copyToSendMemory(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, sendMemory.count)
        if n > 0, let src = bytes.baseAddress, let dst = sendMemory.baseAddress { dst.copyMemory(from: src, byteCount: n) }
        return n
    }

    /// Sends the first `count` bytes of `sendMemory`; they are not touched again until `sent` runs.
    func send(count: Int) {
        sending = true
        loop.send(socket, UnsafeRawBufferPointer(rebasing: sendMemory[0..<count]), onSend)
    }

    /// Replies the session produced that are not sent yet.
    var hasUnsentReplies: Bool { replyBatchSent < replyBatchCount || !session.output.isEmpty }

    /// Replies are being written or wait to be (the daemon's shutdown lets
    /// them out with `closeAfterNextReply` rather than cutting them off).
    package var isWritingReplies: Bool { sending || hasUnsentReplies }

    private func sent(_ result: Result<Void, IOError>) {
        sending = false
        guard !closed else { finishIfIdle(); return }
        if case .failure = result { close(); return }
        sendsCompleted &+= 1
        if tlsStarting && !hasUnsentReplies { tlsStarting = false } // the 220 is out
        if hasUnsentReplies || tlsRefusalDue || (tls?.pendingCiphertextBytes ?? 0) > 0 {
            flush()
        }
        if !sending && closeAfterFlush { close(); return }
        resumeHeldInput()
        readIfWanted()
    }

    /// `sessionTimeout` reached: 421 4.4.2 and close, unless an end-of-data
    /// decision is in progress (the message may already be durable: its
    /// answer goes out first, then the deadline applies).
    private func sessionTimerFired() {
        sessionTimer = nil
        guard !closed else { return }
        if session.isAwaitingDecision {
            sessionTimer = loop.scheduleTimer(after: 100_000_000, onSessionTimer)
            return
        }
        handler?.serverConnectionWillTimeOut()
        guard !closed else { return }
        if sending {
            close() // replies still on their way: a 421 behind them would not come in time
            return
        }
        inSession = true
        let actions = session.sessionTimedOut()
        inSession = false
        settle(actions)
    }

    /// The owner is shutting down: the client's next command gets `reply` (a
    /// 421) and the connection closes once it is written; a reply already
    /// owed (a message being committed gets its 250) goes out first. A client
    /// that sends no command within `deadline` (ns) gets `reply` then; one
    /// whose replies are still being written at the deadline is closed (the
    /// 421 would not get through either).
    public func drain(_ reply: SMTPReply, deadline: UInt64) {
        guard !closed, drainTimer == nil else { return }
        session.beginDrain(reply)
        drainTimer = loop.scheduleTimer(after: deadline) { [unowned self] in self.drainDeadlineFired() }
    }

    private func drainDeadlineFired() {
        drainTimer = nil
        guard !closed else { return }
        if session.isAwaitingDecision {
            // A commit in progress: its reply first (as for the session deadline).
            drainTimer = loop.scheduleTimer(after: 100_000_000) { [unowned self] in self.drainDeadlineFired() }
            return
        }
        if sending { close(); return }
        inSession = true
        let actions = session.drainDeadlinePassed()
        inSession = false
        settle(actions)
    }

    /// One timer per connection, re-armed for the remaining time rather than
    /// moved on every read: no timer work per received chunk.
    private func timerFired() {
        timer = nil
        guard !closed else { return }
        let quiet = loop.now &- lastActivity
        let sendStuck = sending && sendsCompleted == sendsAtLastTimer
        sendsAtLastTimer = sendsCompleted
        if quiet < idleTimeout || session.isAwaitingDecision || (sending && !sendStuck) {
            timer = loop.scheduleTimer(after: quiet < idleTimeout ? idleTimeout - quiet : idleTimeout, onTimer)
            return
        }
        if sending {
            // Not one send completed for a whole timeout: the client stopped
            // reading, and a 421 would not get through either.
            handler?.serverConnectionWillTimeOut()
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
