#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PeregrineIO

/// A sans-I/O ESMTP server session (RFC 5321, 2920, 1870, 6152, 3461, 2034,
/// 3463, 4954, 3207). Feed it bytes with `receive(_:)`; it answers into
/// `output`, asks its delegate for policy decisions, and streams unstuffed
/// DATA to the delegate in chunks.
///
/// Pipelining: every complete command in an input batch is processed and
/// its reply appended to `output`; the returned actions say to flush once.
/// When a decision is pending, input is buffered and nothing further is
/// processed until `decide(_:)`.
///
/// Defined behaviour for hostile input:
/// - Command lines end at LF (a preceding CR is removed), so bare-LF clients work.
/// - A command line longer than `maxCommandLineLength` (CRLF included) gets
///   500 5.5.6; the rest of it up to the next LF is discarded; the session goes on.
/// - A NUL byte in a command line gets 501 5.5.2.
/// - In DATA only CRLF ends a line (see `DotUnstuffer`); bare LF is content.
/// - Every protocol error counts; at `maxErrors` the session sends 421 4.7.0 and closes.
/// - A client that pipelines without reading: once `output` holds more than
///   `maxPendingOutput` bytes, commands are no longer processed (their bytes
///   wait as buffered input) until the owner has taken the output and calls
///   `processBufferedInput()`; `isOutputFull` tells the owner to stop reading.
public final class SMTPServerSession {
    /// The longest reply the session writes on its own (the EHLO reply with a
    /// 255-byte host name is the longest): the most `output` can exceed
    /// `maxPendingOutput` by, replies chosen by the owner aside.
    public static let longestOwnReply = 1024

    enum Phase { case notStarted, rejected, connected, ready, mail, rcpt, data, closed }
    enum Awaiting { case greeting, helo(SMTPHelo), mail(SMTPMailFrom), rcpt(SMTPRcptTo), endOfData, auth(SMTPAuthCredentials), startTLS }
    enum AuthState { case none, plainResponse, loginUsername, loginPassword(String) }

    /// The owner may change limits between transactions (a login's
    /// `<source>` rights, e.g. its max-message-size, apply from the next MAIL).
    public var configuration: SMTPServerConfiguration
    public weak var delegate: (any SMTPServerSessionDelegate)?

    /// Replies waiting to be written. Take them with `swapOutput(_:)`.
    public private(set) var output = ByteBuffer(capacity: 1024)
    /// The envelope accepted so far in the current transaction.
    public private(set) var transaction = SMTPTransaction()
    /// What the client said in EHLO/HELO.
    public private(set) var helo: SMTPHelo?
    /// The user name of a successful AUTH.
    public private(set) var authenticatedUser: String?
    /// True after STARTTLS was accepted.
    public private(set) var isTLSActive = false
    public private(set) var errorCount = 0

    var phase: Phase = .notStarted
    var awaiting: Awaiting?
    var authState: AuthState = .none
    var rcptAttempted = false
    var lineBuffer = ByteBuffer(capacity: 512)
    var discardingLongLine = false
    var pendingInput = ByteBuffer(capacity: 0)
    var discardPendingInput = false
    var startTLSRequested = false
    var unstuffer: DotUnstuffer
    var bodySize = 0
    var bodyOverflow = false
    var inCallback = false
    var reentrantDecision: SMTPServerDecision?
    var processing = false
    /// Set by `beginDrain(_:)`: the reply (a 421) the next command gets (SMTPServerSession+Drain.swift).
    var drainReply: SMTPReply?

    public init(configuration: SMTPServerConfiguration = SMTPServerConfiguration(),
                delegate: (any SMTPServerSessionDelegate)? = nil) {
        self.configuration = configuration
        self.delegate = delegate
        self.unstuffer = DotUnstuffer(maxLineLength: configuration.maxDataLineLength)
        self.isTLSActive = configuration.implicitTLS
    }

    // MARK: State for the owner

    public var isClosed: Bool { phase == .closed }
    /// True while a decision is pending (input is being buffered).
    public var isAwaitingDecision: Bool { awaiting != nil }
    /// Bytes received but not processed yet (the owner may stop reading above a bound).
    public var bufferedInputBytes: Int { pendingInput.readableBytes }
    /// True while the session is receiving a DATA body.
    public var isInData: Bool { phase == .data }
    /// True while more than `maxPendingOutput` reply bytes wait in `output`:
    /// no command is processed until the owner takes them (stop reading).
    public var isOutputFull: Bool { output.readableBytes > configuration.maxPendingOutput }

    /// Moves the pending output into `buffer` (whose old contents are dropped)
    /// and gives the session `buffer`'s storage back: a ping-pong of two
    /// buffers with no allocation.
    public func swapOutput(_ buffer: inout ByteBuffer) {
        buffer.clear()
        swap(&output, &buffer)
    }

    // MARK: Driving

    /// Starts the session: asks for the connection decision and greets.
    @discardableResult
    public func start() -> SMTPServerActions {
        guard phase == .notStarted else { return actions() }
        requestDecision(.greeting, .connection)
        drainPending()
        return actions()
    }

    /// Feeds received bytes. Body chunks handed to the delegate may point into `bytes`.
    @discardableResult
    public func receive(_ bytes: UnsafeRawBufferPointer) -> SMTPServerActions {
        guard phase != .closed, !processing, bytes.count > 0 else { return actions() }
        if awaiting != nil || phase == .notStarted || !pendingInput.isEmpty {
            pendingInput.append(bytes)
            drainPending()
            return actions()
        }
        processing = true
        let consumed = process(bytes)
        processing = false
        if discardPendingInput {
            discardPendingInput = false
        } else if consumed < bytes.count && phase != .closed {
            pendingInput.append(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
        }
        return actions()
    }

    @discardableResult
    public func receive(_ bytes: [UInt8]) -> SMTPServerActions {
        bytes.withUnsafeBytes { receive($0) }
    }

    /// Supplies the decision a `.pending` answer postponed, and resumes.
    @discardableResult
    public func decide(_ decision: SMTPServerDecision) -> SMTPServerActions {
        if inCallback { reentrantDecision = decision; return actions() }
        guard awaiting != nil, decision != .pending else { return actions() }
        apply(decision)
        drainPending()
        return actions()
    }

    /// Ends the DATA phase's pending decision: `reply` nil means accepted (250 2.0.0).
    @discardableResult
    public func completeMessage(_ reply: SMTPReply? = nil) -> SMTPServerActions {
        decide(reply.map { .reply($0) } ?? .accept)
    }

    /// Processes input held back while `output` was full (see
    /// `isOutputFull`); call it after taking the output. Does nothing while a
    /// decision is pending or nothing is buffered.
    @discardableResult
    public func processBufferedInput() -> SMTPServerActions {
        guard phase != .closed, !processing, awaiting == nil, !pendingInput.isEmpty else { return actions() }
        drainPending()
        return actions()
    }

    /// The peer closed or the connection failed.
    public func connectionClosed() {
        guard phase != .closed else { return }
        abortTransaction()
        phase = .closed
        awaiting = nil
        pendingInput.clear()
    }

    /// The owner's idle timer fired: 421 4.4.2 and close.
    @discardableResult
    public func timedOut() -> SMTPServerActions {
        guard phase != .closed else { return actions() }
        write(SMTPReply(421, "4.4.2", "\(configuration.hostname) Error: timeout exceeded"))
        connectionClosed()
        return actions()
    }

    /// The owner's session deadline passed: 421 4.4.2 and close.
    @discardableResult
    public func sessionTimedOut() -> SMTPServerActions {
        guard phase != .closed else { return actions() }
        write(SMTPReply(421, "4.4.2", "\(configuration.hostname) Error: session time limit exceeded, closing connection"))
        connectionClosed()
        return actions()
    }

    func actions() -> SMTPServerActions {
        let tls = startTLSRequested
        startTLSRequested = false
        return SMTPServerActions(shouldFlush: !output.isEmpty, shouldClose: phase == .closed, shouldStartTLS: tls)
    }

    private func drainPending() {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while awaiting == nil, phase != .closed, phase != .notStarted, !pendingInput.isEmpty, !isOutputFull {
            let consumed = pendingInput.withUnsafeReadableBytes { process($0) }
            if discardPendingInput {
                discardPendingInput = false
                pendingInput.clear()
                break
            }
            pendingInput.moveReaderIndex(forwardBy: consumed)
            if consumed == 0 { break }
        }
        if discardPendingInput {
            discardPendingInput = false
            pendingInput.clear()
        }
        if phase == .closed { pendingInput.clear() }
        pendingInput.compactIfNeeded()
    }

    /// Processes input until it is used up, a decision is pending, or the session closed.
    /// Returns the number of bytes consumed. Touches neither `pendingInput` nor `lineBuffer`'s
    /// caller-visible state in a way that aliases `bytes`.
    private func process(_ bytes: UnsafeRawBufferPointer) -> Int {
        var i = 0
        let n = bytes.count
        while i < n, awaiting == nil, phase != .closed, !discardPendingInput, !isOutputFull {
            if phase == .data {
                let rest = UnsafeRawBufferPointer(rebasing: bytes[i...])
                let progress = unstuffer.consume(rest) { chunk in bodyChunk(chunk) }
                switch progress {
                case .needMore: i = n
                case .complete(let c): i += c; finishData()
                }
                continue
            }
            guard let base = bytes.baseAddress else { return n }
            let lfPtr = memchr(base + i, 10, n - i)
            if discardingLongLine {
                guard let lfPtr else { return n }
                i = base.distance(to: UnsafeRawPointer(lfPtr)) + 1
                discardingLongLine = false
                continue
            }
            guard let lfPtr else {
                lineBuffer.append(UnsafeRawBufferPointer(rebasing: bytes[i...]))
                if lineBuffer.readableBytes > configuration.maxCommandLineLength {
                    lineBuffer.clear()
                    discardingLongLine = true
                    protocolError(Replies.lineTooLong)
                }
                return n
            }
            let lf = base.distance(to: UnsafeRawPointer(lfPtr))
            if lineBuffer.isEmpty {
                handleLine(UnsafeRawBufferPointer(rebasing: bytes[i..<lf]))
            } else {
                lineBuffer.append(UnsafeRawBufferPointer(rebasing: bytes[i..<lf]))
                let copy = lineBuffer.readableBytesArray
                lineBuffer.clear()
                copy.withUnsafeBytes { handleLine($0) }
            }
            i = lf + 1
        }
        return i
    }

    /// One line without its LF (a trailing CR is removed here).
    private func handleLine(_ raw: UnsafeRawBufferPointer) {
        var line = raw
        if let last = line.last, last == 13 { line = UnsafeRawBufferPointer(rebasing: line[..<(line.count - 1)]) }
        if line.count + 2 > configuration.maxCommandLineLength {
            protocolError(Replies.lineTooLong)
            return
        }
        if line.contains(0) {
            protocolError(Replies.nulInCommand)
            return
        }
        if let reply = drainReply { answerDrain(reply); return }
        if case .none = authState {} else {
            handleAuthResponse(line)
            return
        }
        if line.isEmpty {
            protocolError(Replies.emptyCommand)
            return
        }
        switch SMTPCommandParser.parse(line) {
        case .failure(let reply):
            if phase == .rejected { protocolError(Replies.rejectedGreetingSequence) } else { protocolError(reply) }
        case .success(let command):
            handle(command)
        }
    }

    // MARK: Replies

    func write(_ reply: SMTPReply) {
        reply.write(into: &output)
    }

    func protocolError(_ reply: SMTPReply) {
        write(reply)
        errorCount += 1
        if errorCount >= configuration.maxErrors && phase != .closed {
            write(Replies.tooManyErrors)
            connectionClosed()
        }
    }

    /// A reply chosen by the owner; 421 closes.
    func writeOwnerReply(_ reply: SMTPReply) {
        write(reply)
        if reply.code == 421 { connectionClosed() }
    }

    // MARK: Decisions

    func requestDecision(_ what: Awaiting, _ request: SMTPServerRequest) {
        awaiting = what
        reentrantDecision = nil
        inCallback = true
        let d = delegate?.smtpSession(self, decide: request) ?? .accept
        inCallback = false
        if d != .pending {
            apply(d)
        } else if let stored = reentrantDecision, stored != .pending {
            reentrantDecision = nil
            apply(stored)
        }
    }

    func apply(_ decision: SMTPServerDecision) {
        guard let what = awaiting else { return }
        awaiting = nil
        let ownerReply: SMTPReply?
        switch decision {
        case .accept, .pending: ownerReply = nil
        case .reply(let r): ownerReply = r
        }
        switch what {
        case .greeting:
            if let r = ownerReply {
                write(r)
                if r.code == 421 { connectionClosed() } else if r.code >= 400 { phase = .rejected } else { phase = .connected }
            } else {
                write(SMTPReply(code: 220, lines: ["\(configuration.hostname) \(configuration.banner)"]))
                phase = .connected
            }
        case .helo(let h):
            if let r = ownerReply { writeOwnerReply(r); return }
            abortTransaction()
            helo = h
            phase = .ready
            write(heloReply(h))
        case .mail(let m):
            if let r = ownerReply { writeOwnerReply(r); return }
            transaction.mailFrom = m
            phase = .mail
            write(Replies.mailOk)
        case .rcpt(let r):
            if let reply = ownerReply { writeOwnerReply(reply); return }
            transaction.recipients.append(r)
            phase = .rcpt
            write(Replies.rcptOk)
        case .endOfData:
            if let r = ownerReply { write(r) } else { write(Replies.messageAccepted) }
            endTransaction()
            if let r = ownerReply, r.code == 421 { connectionClosed() }
        case .auth(let c):
            if let r = ownerReply { writeOwnerReply(r); return }
            authenticatedUser = c.username
            write(Replies.authOk)
        case .startTLS:
            if let r = ownerReply { writeOwnerReply(r); return }
            write(Replies.readyForTLS)
            abortTransaction()
            helo = nil
            authenticatedUser = nil
            phase = .connected
            isTLSActive = true
            startTLSRequested = true
            discardPendingInput = true
            lineBuffer.clear()
        }
    }

    func heloReply(_ h: SMTPHelo) -> SMTPReply {
        guard h.isExtended else { return SMTPReply(code: 250, lines: [configuration.hostname]) }
        var lines = [configuration.hostname, "PIPELINING", "SIZE \(configuration.maxMessageSize)", "8BITMIME",
                     "ENHANCEDSTATUSCODES", "DSN"]
        if isAuthOffered { lines.append("AUTH PLAIN LOGIN") }
        if configuration.startTLSEnabled && !isTLSActive { lines.append("STARTTLS") }
        if configuration.advertiseXVERP { lines.append("XVERP") }
        return SMTPReply(code: 250, lines: lines)
    }

    // MARK: Transactions

    func abortTransaction() {
        if transaction.mailFrom != nil || phase == .data {
            delegate?.smtpSessionDidAbortTransaction(self)
        }
        endTransaction()
    }

    func endTransaction() {
        transaction.mailFrom = nil
        transaction.recipients.removeAll(keepingCapacity: true)
        rcptAttempted = false
        if phase == .mail || phase == .rcpt || phase == .data {
            phase = helo == nil ? .connected : .ready
        }
    }

    // MARK: DATA

    func bodyChunk(_ chunk: UnsafeRawBufferPointer) {
        if bodyOverflow { return }
        if bodySize + chunk.count > configuration.maxMessageSize {
            bodyOverflow = true
            return
        }
        bodySize += chunk.count
        delegate?.smtpSession(self, didReceiveBodyChunk: chunk)
    }

    func finishData() {
        let info = SMTPMessageInfo(size: bodySize, sawBareLineFeed: unstuffer.sawBareLineFeed,
                                   sawOverlongLine: unstuffer.sawOverlongLine,
                                   isWireForm: unstuffer.contentIsWireForm && !bodyOverflow)
        let refusal: SMTPReply?
        if bodyOverflow {
            refusal = Replies.messageTooBig
        } else if info.sawOverlongLine && configuration.longDataLinePolicy == .reject {
            refusal = Replies.dataLineTooLong
        } else if info.sawBareLineFeed && configuration.bareLineFeedPolicy == .reject {
            refusal = Replies.bareLineFeed
        } else {
            refusal = nil
        }
        if let refusal {
            write(refusal)
            abortTransaction()
            return
        }
        requestDecision(.endOfData, .endOfData(info))
    }
}
