import PeregrineIO
import PeregrineSMTP

/// One message for `SMTPClientConnection`: the envelope and the body bytes
/// (any line ends; the session CRLF-normalises and dot-stuffs them).
public struct SMTPOutgoingMessage: Sendable {
    public var envelope: SMTPClientEnvelope
    public var body: [UInt8]
    public init(envelope: SMTPClientEnvelope, body: [UInt8]) { self.envelope = envelope; self.body = body }
}

/// Connects (optionally from a source IP) and drives an `SMTPClientSession`:
/// asks `nextMessage` for each message while the connection is usable,
/// reports every result through `onResult`, QUITs when `nextMessage`
/// returns nil, and reports the end through `onClose`. Per-phase timeouts
/// are armed on the loop's timers as the session asks.
public final class SMTPClientConnection<Loop: EventLoop> {
    public let loop: Loop
    public let session: SMTPClientSession
    public private(set) var socket: Socket?
    /// The next message to send, or nil to QUIT.
    public var nextMessage: () -> SMTPOutgoingMessage? = { nil }
    public var onResult: (SMTPMessageResult) -> Void = { _ in }
    /// Called once at the end (connect failures become `.connectionLost`).
    public var onClose: (SMTPClientCloseReason) -> Void = { _ in }
    /// STARTTLS policy and state (nil: plain text only). Set before `connect`.
    public var tls: SMTPClientTLS?
    /// Called once the TLS handshake has completed.
    public var onTLSEstablished: ((SMTPClientConnection<Loop>) -> Void)?

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var sendBuffer = ByteBuffer(capacity: 4096)
    private var currentBody: [UInt8] = []
    private var receiving = false
    private var sending = false
    private var closed = false
    private var reported = false
    private var timer: TimerHandle?
    private var reason: SMTPClientCloseReason?
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSend: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    private var keepAlive: SMTPClientConnection<Loop>?

    public init(loop: Loop, configuration: SMTPClientConfiguration, receiveBufferSize: Int = 16384) {
        self.loop = loop
        self.session = SMTPClientSession(configuration: configuration)
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
        onReceive = { [unowned self] r in self.received(r) }
        onSend = { [unowned self] r in self.sent(r) }
        onTimer = { [unowned self] in self.timer = nil; self.session.timedOut(); self.pump() }
    }

    deinit { receiveBuffer.deallocate() }

    public func connect(to address: SocketAddress, from source: SocketAddress? = nil, timeout: UInt64 = 120_000_000_000) {
        keepAlive = self
        loop.connect(to: address, from: source, timeout: timeout) { [unowned self] result in
            switch result {
            case .failure:
                self.closed = true
                self.report(.connectionLost)
            case .success(let s):
                self.socket = s
                self.session.start()
                self.pump()
                self.readIfWanted()
            }
        }
    }

    private func readIfWanted() {
        guard !closed, !receiving, let s = socket else { return }
        receiving = true
        loop.receive(s, into: receiveBuffer, onReceive)
    }

    private func received(_ r: Result<Int, IOError>) {
        receiving = false
        guard !closed else { finishIfIdle(); return }
        switch r {
        case .success(0), .failure:
            session.connectionClosed()
        case .success(let n):
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if let tls, tls.isActive {
                if tls.receive(bytes, session: session) { onTLSEstablished?(self) }
            } else {
                session.receive(bytes)
            }
        }
        pump()
        readIfWanted()
    }

    /// Handles every pending session event, then writes what the session produced.
    private func pump() {
        while let e = session.nextEvent() {
            switch e {
            case .setTimer(_, let ns):
                if let t = timer { loop.cancelTimer(t) }
                timer = loop.scheduleTimer(after: ns, onTimer)
            case .cancelTimer:
                if let t = timer { loop.cancelTimer(t); timer = nil }
            case .ready(let ext):
                if let tls, tls.ready(ext, session: session) { break }
                if let m = nextMessage() {
                    currentBody = m.body
                    session.send(m.envelope)
                } else {
                    session.quit()
                }
            case .sendBody:
                session.appendBody(currentBody)
                currentBody = []
                session.finishBody()
            case .startTLS(let reply):
                tls?.startTLSReplied(reply, session: session)
            case .messageCompleted(let r):
                onResult(r)
            case .closed(let why):
                reason = why
            }
        }
        flush()
        if reason != nil && !sending { closeSocket() }
    }

    private func flush() {
        if let tls, tls.isActive {
            guard !sending, !closed, let s = socket,
                  let cipher = tls.nextCiphertext(session: session, closing: reason != nil) else { return }
            sending = true
            loop.send(s, cipher, onSend)
            return
        }
        guard !sending, !closed, let s = socket, !session.output.isEmpty else { return }
        session.swapOutput(&sendBuffer)
        sending = true
        sendBuffer.withUnsafeReadableBytes { loop.send(s, $0, onSend) }
    }

    private func sent(_ r: Result<Void, IOError>) {
        sending = false
        guard !closed else { finishIfIdle(); return }
        if case .failure = r { session.connectionClosed() }
        pump()
    }

    private func closeSocket() {
        guard !closed else { return }
        closed = true
        if let t = timer { loop.cancelTimer(t); timer = nil }
        if let s = socket { loop.close(s) }
        finishIfIdle()
    }

    private func finishIfIdle() {
        guard closed, !receiving, !sending else { return }
        report(reason ?? .connectionLost)
    }

    private func report(_ why: SMTPClientCloseReason) {
        guard !reported else { return }
        reported = true
        onClose(why)
        nextMessage = { nil }
        onResult = { _ in }
        onClose = { _ in }
        keepAlive = nil
    }
}
