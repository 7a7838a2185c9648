import PeregrineIO
import PeregrineSMTP
import PeregrineTLS
import PeregrineTransport

/// The sink's side of one SMTP connection: asks the policy at every phase,
/// delays answers with loop timers (never blocking), scans the header section
/// for `X-Loadgen-Id`. The socket, the replies and TLS are Core's
/// `SMTPServerConnection`, the same class the daemon's injection listener uses.
final class SinkSMTPHandler<Loop: EventLoop>: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    let loop: Loop
    let shared: SinkShared
    let conn: SinkConnection
    /// Set by the server before `start()`; nil once the socket closed (ends the reference cycle).
    var connection: SMTPServerConnection<Loop>?

    static var minimumDelay: UInt64 { 500_000 }

    private var firstBodyChunk = true
    private var scanner = SinkHeaderScanner()
    /// Set for profiles with bulk-sender rules: the message is kept until the end of DATA.
    private let bulkSender: SinkBulkSenderCheck?
    private let scanHeaders: Bool
    private var pendingDecision: SMTPServerDecision?
    private var pendingClose = false
    private var pendingTimer: TimerHandle?
    private let greetingDecision: SinkDecision
    private let greetingLatency: UInt64
    // Stored completion: no closure allocation per delayed answer.
    private var onTimer: (() -> Void)!

    /// `greeting`/`latency`: decided at accept time.
    init(loop: Loop, shared: SinkShared, conn: SinkConnection, greeting: SinkDecision, latency: UInt64) {
        self.loop = loop
        self.shared = shared
        self.conn = conn
        self.scanHeaders = shared.isRecordingIds
        self.greetingDecision = greeting
        self.greetingLatency = latency
        // Without --dkim-key the sink can verify no signature: the rules are
        // not enforced (SinkMain says so at start).
        self.bulkSender = conn.provider.profile.bulkSender.isActive && !shared.dkimKeys.isEmpty ? SinkBulkSenderCheck() : nil
        onTimer = { [unowned self] in self.timerFired() }
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
            // A refused greeting always ends the connection.
            if greetingDecision == .drop { return dropConnection() }
            if greetingDecision == .accept, let text = policy.greetingText(c) {
                // The provider's whole greeting (`banner "220 …"`), written once.
                return answer(.reply(SMTPReply(code: 220, lines: [text])), close: false, after: greetingLatency)
            }
            return answer(Self.map(greetingDecision), close: greetingDecision != .accept, after: greetingLatency)
        case .helo:
            shared.lock.withLock {
                decision = policy.helo(c, now: now)
                latency = policy.latency(c, .helo)
            }
        case .mailFrom(let m):
            if scanHeaders { scanner.reset() }
            firstBodyChunk = true
            firstChunkOfReport = true
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
            // The bulk-sender rules are checked outside the lock (signature verification is CPU work).
            let failed = bulkSender.flatMap { check -> (SinkReason, SinkReplyTemplate)? in
                defer { check.message.removeAll(keepingCapacity: true) }
                return check.evaluate(c.provider.profile.bulkSender, keys: shared.dkimKeys)
            }
            shared.lock.withLock {
                if let (reason, reply) = failed {
                    decision = policy.refuseMessage(c, reason, reply, now: now)
                } else {
                    decision = policy.endOfData(c, size: info.size, now: now)
                }
                latency = policy.latency(c, .data)
            }
            if decision == .accept && scanHeaders { shared.record(id: scanner.trimmedValue) }
            if decision == .accept, let reports = shared.asyncReports {
                let t = session.transaction
                let complained = reports.accepted(sender: t.mailFrom?.reversePath ?? "", recipient: t.recipients.first?.forwardPath ?? "",
                                                  headers: reportHeaders, reportingHost: conn.provider.profile.hostname, peerIP: conn.ipState.ip,
                                                  provider: conn.provider.profile.name)
                if c.provider.profile.complaintPenalty != nil {
                    shared.lock.withLock { policy.noteAccepted(c, complained: complained, now: now) }
                }
            }
            reportHeaders.removeAll(keepingCapacity: true)
        case .auth:
            return .accept
        case .startTLS:
            guard shared.tlsContext != nil, conn.provider.profile.startTLS != .refuse else {
                return .reply(SMTPReply(454, "4.7.0", "TLS not available due to temporary reason"))
            }
            return .accept
        }
        if decision == .drop { return dropConnection() }
        var close = false
        if case .reply(let r) = decision, r.close { close = true }
        return answer(Self.map(decision), close: close, after: latency)
    }

    /// A limit that answers `close`: no reply, the connection goes away (it
    /// closes once the session has returned from this callback).
    private func dropConnection() -> SMTPServerDecision {
        connection?.close()
        return .pending
    }

    /// Answers now, or after `latency` through a loop timer (`.pending` meanwhile).
    private func answer(_ d: SMTPServerDecision, close: Bool, after latency: UInt64) -> SMTPServerDecision {
        // Loop timers tick every millisecond: a delay under half a tick (a
        // scaled-down CI latency) is answered at once rather than rounded up.
        if latency < Self.minimumDelay {
            if close { connection?.closeAfterNextReply() }
            return d
        }
        pendingDecision = d
        pendingClose = close
        pendingTimer = loop.scheduleTimer(after: latency, onTimer)
        return .pending
    }

    private func timerFired() {
        pendingTimer = nil
        guard let connection, let d = pendingDecision else { return }
        pendingDecision = nil
        if pendingClose { connection.closeAfterNextReply() }
        connection.decide(d)
    }

    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        if firstBodyChunk {
            firstBodyChunk = false
            let now = loop.now
            let d = shared.lock.withLock { shared.policy.dataCommand(conn, now: now) }
            // A drop during DATA: no reply, the connection just goes away
            // (the connection closes once the session has returned).
            if d == .drop { connection?.close() }
        }
        if scanHeaders { scanner.scan(chunk) }
        bulkSender?.message.append(contentsOf: chunk)
        if shared.asyncReports != nil { keepHeaders(chunk) }
    }

    /// The header section of the message being received (up to 64 KB), for a report that quotes it.
    private var reportHeaders: [UInt8] = []
    private var reportHeadersDone = false
    private func keepHeaders(_ chunk: UnsafeRawBufferPointer) {
        if firstChunkOfReport { reportHeaders.removeAll(keepingCapacity: true); reportHeadersDone = false; firstChunkOfReport = false }
        guard !reportHeadersDone else { return }
        for b in chunk {
            reportHeaders.append(b)
            let n = reportHeaders.count
            if (n >= 2 && reportHeaders[n - 1] == 10 && reportHeaders[n - 2] == 10)
                || (n >= 4 && reportHeaders[(n - 4)...] == [13, 10, 13, 10]) || n >= 65536 {
                reportHeadersDone = true
                return
            }
        }
    }
    private var firstChunkOfReport = true

    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) {
        shared.lock.withLock { shared.policy.reset(conn) }
        if scanHeaders { scanner.reset() }
        bulkSender?.message.removeAll(keepingCapacity: true)
        firstBodyChunk = true
        firstChunkOfReport = true
    }

    // MARK: Connection hooks

    func serverConnectionWillStartTLS() -> SMTPServerTLSStart {
        // `starttls break`: the client's handshake is answered with bytes that
        // are not TLS, the way a broken middlebox fails it.
        conn.provider.profile.startTLS == .break ? .answerInPlaintext(sinkBrokenTLSAnswer) : .handshake
    }

    func serverConnectionDidEndTLSHandshake(_ tls: TLSConnection?) {
        shared.lock.withLock { shared.policy.tlsHandshake(conn, ok: tls != nil) }
    }

    func serverConnectionWillTimeOut() {
        shared.lock.withLock { shared.policy.timedOut(conn) }
    }

    /// Releases the policy's connection slot.
    func serverConnectionDidClose() {
        if let t = pendingTimer { loop.cancelTimer(t); pendingTimer = nil }
        pendingDecision = nil
        shared.lock.withLock { shared.policy.disconnect(conn) }
        connection = nil
    }
}

/// What `starttls break` sends where the ServerHello belongs (not a TLS record).
private let sinkBrokenTLSAnswer = Array("421 4.7.0 TLS is broken here\r\n".utf8)
