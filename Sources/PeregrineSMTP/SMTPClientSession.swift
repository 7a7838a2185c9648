import PeregrineIO

/// A sans-I/O SMTP client session: the delivering side. Feed it the server's
/// bytes with `receive(_:)`, write `output` whenever it is not empty, and
/// poll `nextEvent()` after every call.
///
/// Flow: `start()` → greeting → EHLO (HELO after a 5xx) → `.ready` →
/// `send(envelope)` → MAIL/RCPT…/DATA (one write when PIPELINING is offered) →
/// `.sendBody` → `appendBody`… `finishBody()` (or `writeBody` into the
/// owner's buffer) → `.messageCompleted` → `.ready`
/// (after RSET when the transaction failed) → … → `quit()` → `.closed`.
/// A 421 at any point, `timedOut()` or `connectionClosed()` completes the
/// current message with per-recipient results and ends with `.closed`.
public final class SMTPClientSession {
    enum State { case notStarted, greeting, ehlo, helo, idle, transaction, body, dataEnd, rset, quit, startTLS, tlsHandshake, closed }
    enum Expect { case mail, rcpt(Int), data }

    public let configuration: SMTPClientConfiguration
    public private(set) var output = ByteBuffer(capacity: 1024)
    public private(set) var extensions = SMTPExtensions()
    /// The server's greeting.
    public private(set) var greeting: SMTPReply?
    /// True once `tlsEstablished()` was called: the session runs over TLS.
    public private(set) var isTLSActive = false

    var state: State = .notStarted
    var parser = SMTPReplyParser()
    var events: [SMTPClientEvent] = []
    var eventIndex = 0
    var stuffer = DotStuffer()

    // Current message.
    var envelope: SMTPClientEnvelope?
    var mailReply: SMTPReply?
    var rcptReplies: [SMTPReply?] = []
    var dataReply: SMTPReply?
    var finalReply: SMTPReply?
    var expected: [Expect] = []
    var expectedIndex = 0
    var pipelined = false
    var acceptedCount = 0
    /// The body's end is written but still waits for the socket (SMTPClientSession+BodySend.swift).
    var bodyUnsent = false

    public init(configuration: SMTPClientConfiguration) {
        self.configuration = configuration
        events.reserveCapacity(16)
    }

    public var isReady: Bool { state == .idle }
    public var isClosed: Bool { state == .closed }

    /// The next event, or nil.
    public func nextEvent() -> SMTPClientEvent? {
        guard eventIndex < events.count else {
            if eventIndex > 0 { events.removeAll(keepingCapacity: true); eventIndex = 0 }
            return nil
        }
        defer { eventIndex += 1 }
        return events[eventIndex]
    }

    /// See `SMTPServerSession.swapOutput`.
    public func swapOutput(_ buffer: inout ByteBuffer) {
        buffer.clear()
        swap(&output, &buffer)
    }

    func emit(_ e: SMTPClientEvent) { events.append(e) }

    func wait(_ phase: SMTPClientPhase) {
        emit(.setTimer(phase, nanoseconds: configuration.timeouts.timeout(for: phase)))
    }

    func writeLine(_ s: String) {
        output.append(string: s)
        output.append(13); output.append(10)
    }

    // MARK: Owner calls

    /// The connection is up: wait for the greeting.
    public func start() {
        guard state == .notStarted else { return }
        state = .greeting
        wait(.greeting)
    }

    public func receive(_ bytes: UnsafeRawBufferPointer) {
        guard state != .closed else { return }
        guard state != .tlsHandshake else { return } // those bytes belong to TLS
        parser.feed(bytes)
        while state != .closed, let r = parser.next() {
            switch r {
            case .success(let reply): handle(reply)
            case .failure(let e):
                let why = Self.describe(e, maxLineLength: parser.maxLineLength)
                fail(.protocolError(why), synthetic: Self.localReply("protocol error: \(why)"))
            }
            if state == .tlsHandshake {
                // RFC 3207 §5: anything after the 220 was sent in plain text
                // before the handshake; acting on it would let a man in the
                // middle inject replies. Drop it.
                parser = SMTPReplyParser()
                break
            }
        }
    }

    public func receive(_ bytes: [UInt8]) { bytes.withUnsafeBytes { receive($0) } }

    /// Starts a message. Returns false when the session is not ready.
    @discardableResult
    public func send(_ envelope: SMTPClientEnvelope) -> Bool {
        guard state == .idle else { return false }
        self.envelope = envelope
        mailReply = nil; dataReply = nil; finalReply = nil
        rcptReplies = Array(repeating: nil, count: envelope.recipients.count)
        acceptedCount = 0
        expected.removeAll(keepingCapacity: true)
        expectedIndex = 0
        state = .transaction
        pipelined = configuration.usePipelining && extensions.pipelining
        writeMail(envelope)
        expected.append(.mail)
        if envelope.recipients.isEmpty {
            // Nothing to deliver to: let MAIL be answered, then finish.
            wait(.mail)
            return true
        }
        if pipelined {
            for (i, r) in envelope.recipients.enumerated() { writeLine("RCPT TO:<\(r)>"); expected.append(.rcpt(i)) }
            writeLine("DATA")
            expected.append(.data)
        }
        wait(.mail)
        return true
    }

    /// Body bytes after `.sendBody`: dot-stuffed and CRLF-normalised into `output`.
    public func appendBody(_ chunk: UnsafeRawBufferPointer) {
        guard state == .body else { return }
        stuffer.stuff(chunk, into: &output)
    }

    public func appendBody(_ chunk: [UInt8]) { chunk.withUnsafeBytes { appendBody($0) } }

    /// The room `writeBody` needs for a chunk of `count` bytes: the output
    /// still pending, the chunk dot-stuffed at its worst, and the end marker.
    public func writeBodyCapacity(forChunk count: Int) -> Int {
        output.readableBytes + DotStuffer.maxStuffedCount(count) + DotStuffer.maxFinishCount
    }

    /// `appendBody` (+ `finishBody` when `last`) into memory the caller owns
    /// instead of `output`, so an owner can encode the body straight into its
    /// send buffer: writes any output still pending (it goes first on the
    /// wire), then `chunk` dot-stuffed, then with `last` the end marker.
    /// Returns the bytes written from the start of `destination`. When
    /// `destination` is smaller than `writeBodyCapacity(forChunk:)` nothing is
    /// written there (0) and the bytes go to `output` as with `appendBody`.
    public func writeBody(_ chunk: UnsafeRawBufferPointer, last: Bool, into destination: UnsafeMutableRawBufferPointer) -> Int {
        guard state == .body else { return 0 }
        guard destination.count >= writeBodyCapacity(forChunk: chunk.count), let base = destination.baseAddress else {
            appendBody(chunk)
            if last { finishBody() }
            return 0
        }
        var written = 0
        if !output.isEmpty {
            output.withUnsafeReadableBytes { pending in
                if let src = pending.baseAddress { base.copyMemory(from: src, byteCount: pending.count) }
                written = pending.count
            }
            output.clear()
        }
        written += stuffer.stuff(chunk, into: UnsafeMutableRawBufferPointer(rebasing: destination[written...]))
        if last {
            written += stuffer.finish(into: UnsafeMutableRawBufferPointer(rebasing: destination[written...]))
            state = .dataEnd
            wait(.dataEnd)
        }
        return written
    }

    /// Ends the body with "<CRLF>.<CRLF>".
    public func finishBody() {
        guard state == .body else { return }
        stuffer.finish(into: &output)
        state = .dataEnd
        wait(.dataEnd)
    }

    /// Asks for TLS (RFC 3207): when idle and the server offered STARTTLS
    /// over a plain connection. The answer arrives as `.startTLS(reply)`.
    /// Returns false (and does nothing) otherwise.
    @discardableResult
    public func startTLS() -> Bool {
        guard state == .idle, extensions.startTLS, !isTLSActive else { return false }
        writeLine("STARTTLS")
        state = .startTLS
        wait(.startTLS)
        return true
    }

    /// The TLS handshake after a 220 to STARTTLS completed: everything learnt
    /// in plain text is forgotten and EHLO is sent again (RFC 3207 §4.2),
    /// now to be written through TLS.
    public func tlsEstablished() {
        guard state == .tlsHandshake else { return }
        isTLSActive = true
        extensions = SMTPExtensions()
        parser = SMTPReplyParser()
        writeLine("EHLO \(configuration.heloName)")
        state = .ehlo
        wait(.ehlo)
    }

    /// The TLS handshake failed: the connection is unusable (close it).
    public func tlsFailed(_ description: String) {
        guard state == .tlsHandshake else { return }
        fail(.protocolError("TLS handshake failed: \(description)"), synthetic: Self.localReply("TLS handshake failed"))
    }

    /// Ends the session politely.
    public func quit() {
        switch state {
        case .idle, .greeting, .ehlo, .helo:
            writeLine("QUIT")
            state = .quit
            wait(.quit)
        case .notStarted:
            close(.quit(nil))
        default:
            break
        }
    }

    /// The timer armed for the current phase fired.
    public func timedOut() {
        guard state != .closed, let phase = currentPhase else { return }
        if state == .quit { close(.quit(nil)); return }
        fail(.timedOut(phase), synthetic: Self.localReply("timeout waiting for \(phase.awaited)"))
    }

    /// The peer closed or the connection failed.
    public func connectionClosed() {
        guard state != .closed else { return }
        if state == .quit { close(.quit(nil)); return }
        let why = currentPhase.map { $0 == .greeting ? "connection closed by peer before the greeting"
                                                      : "connection closed by peer while waiting for \($0.awaited)" }
            ?? "connection closed by peer"
        fail(.connectionLost, synthetic: Self.localReply(why))
    }

    /// The owner gives up on the connection (e.g. the daemon's shutdown
    /// deadline): like a lost connection, with `why` as the reason the
    /// current message gets.
    public func abandon(_ why: String) {
        guard state != .closed else { return }
        fail(.connectionLost, synthetic: Self.localReply(why))
    }

    /// The phase the session was waiting in when it failed (a timeout, a
    /// lost connection, a protocol error, a refusal); nil when it failed
    /// idle or has not failed. Tells a receiver that fails every session
    /// before `.ready` from one that drops an idle connection.
    public private(set) var failedInPhase: SMTPClientPhase?

    /// The reason of the last failure, as put into the synthetic reply of the
    /// message that was in flight (also set when none was).
    public private(set) var failureReason: String?

    var currentPhase: SMTPClientPhase? {
        switch state {
        case .greeting: return .greeting
        case .ehlo: return .ehlo
        case .helo: return .helo
        case .transaction:
            guard expectedIndex < expected.count else { return .mail }
            switch expected[expectedIndex] { case .mail: return .mail; case .rcpt: return .rcpt; case .data: return .dataInit }
        case .body: return .dataBlock
        case .dataEnd: return bodyUnsent ? .dataBlock : .dataEnd
        case .rset: return .rset
        case .quit: return .quit
        case .startTLS, .tlsHandshake: return .startTLS
        case .idle, .notStarted, .closed: return nil
        }
    }

    static func localReply(_ text: String) -> SMTPReply {
        SMTPReply(451, "4.4.2", text)
    }

    /// A parse error as the operator reads it in a `t` record.
    static func describe(_ e: SMTPReplyParseError, maxLineLength: Int) -> String {
        switch e {
        case .malformedLine(let line):
            // Printable ASCII only, and not all of it: the peer chose these bytes.
            let shown = line.prefix(60).map { $0 >= 0x20 && $0 < 0x7F ? Character(UnicodeScalar($0)) : "?" }
            return "malformed reply line '\(String(shown))\(line.count > 60 ? "..." : "")'"
        case .inconsistentCode(let expected, let got):
            return "multi-line reply changed its code from \(expected) to \(got)"
        case .lineTooLong:
            return "reply line longer than \(maxLineLength) bytes"
        case .tooManyLines(let limit):
            return "reply of more than \(limit) lines"
        }
    }

    // MARK: Replies

    func writeMail(_ e: SMTPClientEnvelope) {
        var line = "MAIL FROM:<\(e.mailFrom)>"
        if extensions.size != nil, let size = e.size { line += " SIZE=\(size)" }
        if extensions.eightBitMIME, let body = e.bodyType { line += " BODY=\(body.rawValue)" }
        if extensions.dsn {
            if let id = e.envelopeID { line += " ENVID=" + XText.encode(id.utf8) }
            if let ret = e.ret { line += " RET=\(ret.rawValue)" }
        }
        writeLine(line)
    }

    func handle(_ reply: SMTPReply) {
        if reply.code == 421 && state != .quit {
            fail(.serviceClosing(reply), synthetic: reply)
            return
        }
        switch state {
        case .notStarted, .idle, .body, .closed:
            fail(.protocolError("unexpected reply \(reply)"), synthetic: Self.localReply("unexpected reply from server"))
        case .greeting:
            greeting = reply
            if reply.isPositiveCompletion {
                writeLine("EHLO \(configuration.heloName)")
                state = .ehlo
                wait(.ehlo)
            } else {
                writeLine("QUIT")
                close(.greetingRefused(reply))
            }
        case .ehlo:
            if reply.isPositiveCompletion {
                extensions = SMTPExtensions(ehloReply: reply)
                becomeIdle()
            } else if reply.isPermanentFailure {
                writeLine("HELO \(configuration.heloName)")
                state = .helo
                wait(.helo)
            } else {
                writeLine("QUIT")
                close(.heloRefused(reply))
            }
        case .helo:
            if reply.isPositiveCompletion {
                extensions = SMTPExtensions()
                becomeIdle()
            } else {
                writeLine("QUIT")
                close(.heloRefused(reply))
            }
        case .transaction:
            transactionReply(reply)
        case .dataEnd:
            bodyUnsent = false
            finalReply = reply
            completeMessage()
        case .rset:
            becomeIdle()
        case .startTLS:
            if reply.code == 220 {
                state = .tlsHandshake
                emit(.startTLS(reply))
                wait(.startTLS) // the handshake gets the phase's time
            } else {
                emit(.startTLS(reply))
                becomeIdle()
            }
        case .tlsHandshake:
            break // not reached: receive() ignores bytes during the handshake
        case .quit:
            close(.quit(reply))
        }
    }

    func transactionReply(_ reply: SMTPReply) {
        guard let envelope, expectedIndex < expected.count else {
            fail(.protocolError("unexpected reply \(reply)"), synthetic: Self.localReply("unexpected reply from server"))
            return
        }
        let what = expected[expectedIndex]
        expectedIndex += 1
        switch what {
        case .mail:
            mailReply = reply
            if envelope.recipients.isEmpty { completeMessage(); return }
            if pipelined { wait(.rcpt); return }
            if reply.isPositiveCompletion {
                writeLine("RCPT TO:<\(envelope.recipients[0])>")
                expected.append(.rcpt(0))
                wait(.rcpt)
            } else {
                completeMessage()
            }
        case .rcpt(let i):
            rcptReplies[i] = reply
            if reply.isPositiveCompletion { acceptedCount += 1 }
            let last = i + 1 == envelope.recipients.count
            if pipelined {
                wait(last ? .dataInit : .rcpt)
                return
            }
            if !last {
                writeLine("RCPT TO:<\(envelope.recipients[i + 1])>")
                expected.append(.rcpt(i + 1))
                wait(.rcpt)
            } else if acceptedCount > 0 {
                writeLine("DATA")
                expected.append(.data)
                wait(.dataInit)
            } else {
                completeMessage()
            }
        case .data:
            dataReply = reply
            if reply.code == 354 {
                if acceptedCount > 0 && mailReply?.isPositiveCompletion == true {
                    state = .body
                    stuffer.reset()
                    emit(.sendBody)
                    wait(.dataBlock)
                } else {
                    // RFC 2920: DATA was accepted although no recipient was; send an empty body.
                    stuffer.reset()
                    stuffer.finish(into: &output)
                    state = .dataEnd
                    wait(.dataEnd)
                }
            } else {
                completeMessage()
            }
        }
    }

    func becomeIdle() {
        state = .idle
        emit(.cancelTimer)
        emit(.ready(extensions))
    }

    /// Builds the per-recipient results; `missing` answers whatever got no reply.
    func buildResult(missing: SMTPReply?) -> SMTPMessageResult? {
        guard let envelope else { return nil }
        let fallback = missing ?? Self.localReply("no reply")
        var results: [SMTPRecipientResult] = []
        results.reserveCapacity(envelope.recipients.count)
        for (i, address) in envelope.recipients.enumerated() {
            var decisive: SMTPReply
            var local = false
            if let m = mailReply, !m.isPositiveCompletion {
                decisive = m
            } else if mailReply == nil {
                decisive = fallback; local = missing == nil || missing?.code != 421
            } else if let r = rcptReplies[i], !r.isPositiveCompletion {
                decisive = r
            } else if rcptReplies[i] == nil {
                decisive = fallback; local = missing?.code != 421
            } else if let f = finalReply {
                decisive = f
            } else if let d = dataReply, d.code != 354 {
                decisive = d
            } else {
                decisive = fallback; local = missing?.code != 421
            }
            let status: SMTPRecipientResult.Status =
                decisive.isPositiveCompletion && !local ? .delivered : (decisive.isPermanentFailure ? .permanentFailure : .transientFailure)
            results.append(SMTPRecipientResult(address: address, status: status, reply: decisive, isLocal: local))
        }
        return SMTPMessageResult(envelope: envelope, mailReply: mailReply, rcptReplies: rcptReplies,
                                 dataReply: dataReply, finalReply: finalReply, recipients: results)
    }

    func completeMessage() {
        guard let result = buildResult(missing: nil) else { becomeIdle(); return }
        envelope = nil
        emit(.messageCompleted(result))
        let clean = result.mailReply?.isPositiveCompletion == true &&
            (result.finalReply?.isPositiveCompletion == true || result.envelope.recipients.isEmpty && false)
        if clean {
            becomeIdle()
        } else {
            writeLine("RSET")
            state = .rset
            wait(.rset)
        }
    }

    /// Ends the session; the current message (if any) completes with `synthetic` for
    /// everything unanswered.
    func fail(_ reason: SMTPClientCloseReason, synthetic: SMTPReply) {
        if state != .closed {
            failedInPhase = currentPhase
            failureReason = synthetic.lines.joined(separator: " ")
        }
        if envelope != nil, let result = buildResult(missing: synthetic) {
            envelope = nil
            emit(.messageCompleted(result))
        }
        close(reason)
    }

    func close(_ reason: SMTPClientCloseReason) {
        guard state != .closed else { return }
        state = .closed
        bodyUnsent = false
        emit(.cancelTimer)
        emit(.closed(reason))
    }
}
