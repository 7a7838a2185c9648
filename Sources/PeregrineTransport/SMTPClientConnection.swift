#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP

/// Drives an `SMTPClientSession` over a socket: the one client glue of the
/// engine's delivery connections, the loadgen and the tests. It connects
/// (optionally from a source IP), receives into one owned buffer, writes the
/// session's commands and the body from one owned send buffer, arms the
/// session's per-phase timers on the loop, runs the STARTTLS steps of `tls`,
/// and closes. The `handler` decides: which message, which body, what a
/// result or a close means (`SMTPClientConnectionHandler`).
///
/// Ownership: the handler owns the connection and outlives it
/// (`handler` is `unowned(unsafe)`, no reference counting per event); the
/// handler keeps it until `clientConnectionDidFinish`, after which no
/// callback of the loop refers to it. Completion closures are created once.
///
/// Memory ceiling (principle 8), whatever the receiver does:
/// - fixed: the receive buffer (16 KiB); with TLS two buffers of
///   `SMTPClientTLS` (16 + 64 KiB) plus OpenSSL's record buffers;
/// - input: the reply parser holds at most one over-long line before the
///   session calls it a protocol error; a reply nobody asked for is one too,
///   so a receiver flooding replies gains nothing;
/// - unsent output (`unsentOutputBytes`): the send in flight plus the
///   session's output behind it. A receive is started only while that
///   output is at most `maxPendingOutput`, and one receive completes at most
///   one transaction and writes at most one body: the session handles every
///   reply of a receive before the handler hears of any, so a reply that
///   comes after a 354 (the session waits for the body then) or after a
///   final reply (it is idle) is unexpected, a protocol error that ends the
///   session. Early replies (a receiver answering pipelined transactions
///   before reading them) therefore cannot queue body after body. So unsent
///   output stays under 2 × (`maxPendingOutput` + one transaction's commands
///   + the largest body, dot-stuffed), the body being the handler's bound
///   (the engine's max-message-size, the loadgen's largest size). A receiver
///   that stops reading stalls the send; the session's timers
///   (`data-send-timeout` for the body until the socket took it, the reply
///   timeouts otherwise) end the session, and a session that timed out
///   closes the socket with that send still in flight (it would never
///   complete).
public final class SMTPClientConnection<Loop: EventLoop, Handler: SMTPClientConnectionHandler> {
    public let loop: Loop
    public unowned(unsafe) let handler: Handler
    public private(set) var session: SMTPClientSession
    /// STARTTLS policy and state (nil: plain text only). Set before the
    /// session starts (at the latest in `clientConnectionDidConnect`).
    public var tls: SMTPClientTLS?
    /// No session timer is armed for longer than this (ns): the loadgen's `--timeout`.
    public var timeoutCeiling: UInt64 = .max
    /// Session output allowed to wait behind a send in flight before reading pauses.
    public var maxPendingOutput = 64 * 1024
    /// The socket while connected (the handler reads it for logs only).
    public private(set) var socket: Socket?
    /// The session's end, once it ended.
    public private(set) var closeReason: SMTPClientCloseReason?
    /// The socket is closed (or the connect was cancelled); `renew()` reopens.
    public private(set) var isClosed = false
    /// The highest `unsentOutputBytes` seen (checked after every receive).
    public private(set) var peakUnsentOutputBytes = 0

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// Bytes for the socket: the session's commands and, written straight in
    /// by the session (no copy through its output), the dot-stuffed body.
    /// Not empty while `!sending` only between a body write and the `flush`
    /// that follows it in the same `pump`; cleared when a send completes.
    private let sendBuffer = OwnedBuffer(capacity: 4096)
    /// Takes the session's output (by swap: no allocation) before it is copied after the body.
    private var pendingOutput = ByteBuffer(capacity: 1024)
    /// The body of the current `.sendBody` goes through `session.output`
    /// (over TLS, or while a send is in flight: the send buffer is the loop's).
    private var bodyThroughOutput = false
    /// A body the handler gave as a file range (`writeBody(file:offset:count:)`):
    /// sent with `loop.sendFile` once the bytes queued before it are out,
    /// then `fileBodyTail` (the end marker) and whatever the session wrote since.
    /// The connection owns `file` and closes it when the send is over.
    private var fileBody: (file: FileHandle, offset: Int64, count: Int)?
    private var fileBodyInFlight = false
    private var fileBodyTail = OwnedBuffer(capacity: 8)
    private var onFileSent: ((Result<Void, IOError>) -> Void)!
    private var connecting = false
    private var receiving = false
    private var sending = false
    /// The session ended; the socket closes once the last send completed.
    private var closing = false
    /// `quit()`/`abandon(_:)` while connecting: close as soon as the connect completes.
    private var cancelConnect = false
    private var finished = false
    /// Nesting of entry points, so that `clientConnectionDidFinish` comes only
    /// once the outermost one returns (the handler may renew the connection there).
    private var depth = 0
    private var timer: TimerHandle?
    private var onConnect: ((Result<Socket, IOError>) -> Void)!
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSent: ((Result<Void, IOError>) -> Void)!
    private var onTimer: (() -> Void)!
    private var onLingerOver: (() -> Void)!

    public init(loop: Loop, configuration: SMTPClientConfiguration, handler: Handler, receiveBufferSize: Int = 16384) {
        self.loop = loop
        self.handler = handler
        self.session = SMTPClientSession(configuration: configuration)
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
        onConnect = { [unowned self] r in self.connected(r) }
        onReceive = { [unowned self] r in self.received(r) }
        onSent = { [unowned self] r in self.sent(r) }
        onFileSent = { [unowned self] r in self.fileSent(r) }
        onTimer = { [unowned self] in
            self.enter(); defer { self.leave() }
            self.timer = nil
            self.session.timedOut()
            self.pump()
        }
        onLingerOver = { [unowned self] in
            self.enter(); defer { self.leave() }
            self.timer = nil
            self.closeSocket()
        }
    }

    deinit { receiveBuffer.deallocate() }

    /// Operations whose callbacks are still to come (the handler must keep the connection until none is).
    public var hasOperationsInFlight: Bool { connecting || receiving || sending }

    /// Reply bytes produced but not yet handed to the socket.
    public var unsentOutputBytes: Int {
        sendBuffer.count + session.output.readableBytes + (tls?.connection?.pendingCiphertextBytes ?? 0)
    }

    // MARK: Handler calls

    /// Connects to `address` (from `source`, port 0, when given); then
    /// `clientConnectionDidConnect` or `clientConnectionDidFailToConnect`.
    public func connect(to address: SocketAddress, from source: SocketAddress? = nil, timeout: UInt64 = 120_000_000_000) {
        guard !connecting, socket == nil, !isClosed else { return }
        connecting = true
        loop.connect(to: address, from: source, timeout: timeout, onConnect)
    }

    /// After `clientConnectionDidFinish` (or a failed connect): a fresh
    /// session (same configuration) for the next `connect`.
    public func renew() {
        guard socket == nil, !hasOperationsInFlight else { return }
        session = SMTPClientSession(configuration: session.configuration)
        tls = nil
        closeReason = nil
        isClosed = false
        closing = false
        cancelConnect = false
        finished = false
        bodyThroughOutput = false
        sendBuffer.clear()
        fileBodyTail.clear()
    }

    /// Starts a message; false when the session is not ready (nothing sent).
    @discardableResult
    public func send(_ envelope: SMTPClientEnvelope) -> Bool {
        guard !isClosed, session.send(envelope) else { return false }
        enter(); defer { leave() }
        pump()
        return true
    }

    /// From `clientConnectionWillSendBody`: a chunk of the body (any line
    /// ends; it is CRLF-normalised and dot-stuffed on its way).
    public func writeBody(_ chunk: UnsafeRawBufferPointer) {
        if bodyThroughOutput { session.appendBody(chunk); return }
        let start = sendBuffer.count
        sendBuffer.reserve(start + session.writeBodyCapacity(forChunk: chunk.count))
        let room = UnsafeMutableRawBufferPointer(rebasing: sendBuffer.memory[start...])
        sendBuffer.setCount(start + session.writeBody(chunk, last: false, into: room))
    }

    public func writeBody(_ chunk: [UInt8]) { chunk.withUnsafeBytes { writeBody($0) } }

    /// True while a body given now as a file range would be taken: a plain
    /// (not TLS) connection whose session has nothing queued before the body
    /// (a send in flight is fine: the file follows it). Over TLS the bytes
    /// must pass through OpenSSL: the handler copies them.
    public var canSendBodyFromFile: Bool {
        !isClosed && tls?.isActive != true && session.output.isEmpty && fileBody == nil
    }

    /// From `clientConnectionWillSendBody`, instead of `writeBody(_:)`: the
    /// whole body as `count` bytes of `file` at `offset`, already in wire form
    /// (CRLF lines, dot-stuffed, ending with CRLF or empty), sent with
    /// `loop.sendFile` and followed by ".\r\n". Returns false (nothing
    /// taken, the handler keeps `file`) when `canSendBodyFromFile` is false;
    /// on true the connection owns `file` and closes it once sent or failed.
    public func writeBody(file: FileHandle, offset: Int64, count: Int) -> Bool {
        guard canSendBodyFromFile else { return false }
        fileBody = (file, offset, count)
        return true
    }

    /// Ends the session politely (QUIT); while connecting, closes when connected.
    public func quit() {
        guard !isClosed else { return }
        if socket == nil { if connecting { cancelConnect = true }; return }
        enter(); defer { leave() }
        session.quit()
        pump()
    }

    /// Ends the connection now (a shutdown deadline): the message in flight
    /// completes as a transient failure with `why`, and the socket closes
    /// without waiting for the peer or a send in flight.
    public func abandon(_ why: String) {
        guard !isClosed else { return }
        if socket == nil { if connecting { cancelConnect = true }; return }
        enter(); defer { leave() }
        session.abandon(why)
        pump()
        closeSocket()
    }

    // MARK: Loop callbacks

    private func connected(_ result: Result<Socket, IOError>) {
        enter(); defer { leave() }
        connecting = false
        switch result {
        case .success(let s):
            if cancelConnect {
                loop.close(s)
                isClosed = true
                handler.clientConnectionDidClose(nil)
                return
            }
            socket = s
            handler.clientConnectionDidConnect(localAddress: loop.localAddress(of: s))
            session.start()
            receiveIfWanted()
            pump()
        case .failure(let e):
            if cancelConnect {
                isClosed = true
                handler.clientConnectionDidClose(nil)
                return
            }
            handler.clientConnectionDidFailToConnect(e)
        }
    }

    private func receiveIfWanted() {
        // Over the output bound: no reply is read (none can add output) until the send completes.
        guard let s = socket, !receiving, !isClosed, !session.isClosed,
              session.output.readableBytes <= maxPendingOutput else { return }
        receiving = true
        loop.receive(s, into: receiveBuffer, onReceive)
    }

    private func received(_ result: Result<Int, IOError>) {
        enter(); defer { leave() }
        receiving = false
        guard !isClosed else { return }
        switch result {
        case .success(let n) where n > 0:
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
            if let tls, tls.isActive {
                if tls.receive(bytes, session: session) { handler.clientConnectionDidEstablishTLS(tls) }
            } else {
                session.receive(bytes)
            }
            pump()
            let unsent = unsentOutputBytes
            if unsent > peakUnsentOutputBytes { peakUnsentOutputBytes = unsent }
            receiveIfWanted()
        default:
            session.connectionClosed()
            pump()
        }
    }

    /// Handles the session's events, then writes what it produced.
    private func pump() {
        while let event = session.nextEvent() {
            switch event {
            case .setTimer(_, let ns):
                if let t = timer { loop.cancelTimer(t) }
                timer = loop.scheduleTimer(after: min(ns, timeoutCeiling), onTimer)
            case .cancelTimer:
                if let t = timer { loop.cancelTimer(t); timer = nil }
            case .ready(let ext):
                handler.clientConnectionDidNegotiate(ext)
                if let tls, tls.ready(ext, session: session) {
                    // STARTTLS was sent; with a failure, the session QUITs for want of TLS.
                    if tls.failure != nil { handler.clientConnectionTLSFailed(tls, handshake: false) }
                    break
                }
                handler.clientConnectionIsReady(ext)
            case .startTLS(let reply):
                tls?.startTLSReplied(reply, session: session)
            case .sendBody:
                sendBody()
            case .messageCompleted(let result):
                handler.clientConnectionDidComplete(result)
            case .closed(let reason):
                if let tls, let c = tls.connection, !c.isHandshakeComplete {
                    handler.clientConnectionTLSFailed(tls, handshake: true)
                }
                flush()
                closeAfterFlush(reason)
            }
        }
        flush()
    }

    /// The body after 354: dot-stuffed by the session straight into
    /// `sendBuffer`, after whatever is already queued there. Over TLS, or
    /// while a send is in flight (the buffer belongs to the loop then), it
    /// goes through the session's output.
    private func sendBody() {
        bodyThroughOutput = sending || tls?.isActive == true
        handler.clientConnectionWillSendBody()
        if fileBody != nil {
            // The end marker waits in its own buffer: it goes after the file (see `flush`).
            fileBodyTail.clear()
            fileBodyTail.reserve(session.writeBodyCapacity(forChunk: 0))
            fileBodyTail.setCount(session.writeBody(UnsafeRawBufferPointer(start: nil, count: 0), last: true,
                                                    into: fileBodyTail.memory))
        } else if bodyThroughOutput {
            session.finishBody()
        } else {
            let start = sendBuffer.count
            sendBuffer.reserve(start + session.writeBodyCapacity(forChunk: 0))
            let room = UnsafeMutableRawBufferPointer(rebasing: sendBuffer.memory[start...])
            sendBuffer.setCount(start + session.writeBody(UnsafeRawBufferPointer(start: nil, count: 0), last: true, into: room))
        }
        bodyThroughOutput = false
        // Timed by data-send-timeout until the socket has taken it (`sent`).
        session.bodyAwaitsSocket()
    }

    private func flush() {
        guard !sending, !isClosed, let s = socket else { return }
        if let tls, tls.isActive {
            guard let cipher = tls.nextCiphertext(session: session, closing: session.isClosed) else { return }
            sending = true
            loop.send(s, cipher, onSent)
            return
        }
        if let body = fileBody {
            // What was queued before the body goes first; the session's later output waits for the tail.
            sending = true
            if sendBuffer.isEmpty {
                fileBodyInFlight = true
                loop.sendFile(s, body.file, offset: body.offset, count: body.count, onFileSent)
            } else {
                loop.send(s, sendBuffer.bytes, onSent)
            }
            return
        }
        if !fileBodyTail.isEmpty {
            sendBuffer.append(fileBodyTail.bytes)
            fileBodyTail.clear()
        }
        if !session.output.isEmpty {
            session.swapOutput(&pendingOutput)
            pendingOutput.withUnsafeReadableBytes { sendBuffer.append($0) }
        }
        guard !sendBuffer.isEmpty else { return }
        sending = true
        loop.send(s, sendBuffer.bytes, onSent)
    }

    /// The file body's send completed (or failed): its descriptor is closed,
    /// then it is handled as any send (the tail follows in `flush`).
    private func fileSent(_ result: Result<Void, IOError>) {
        fileBodyInFlight = false
        dropFileBody()
        if case .failure = result { fileBodyTail.clear() }
        sent(result)
    }

    private func dropFileBody() {
        guard let body = fileBody, !fileBodyInFlight else { return }
        fileBody = nil
        _ = Glibc.close(body.file.fd)
    }

    private func sent(_ result: Result<Void, IOError>) {
        enter(); defer { leave() }
        sending = false
        sendBuffer.clear()
        guard !isClosed else { return }
        switch result {
        case .success:
            if closing { closeSocket(); return }
            flush()
            if !sending && session.isBodyAwaitingSocket {
                session.bodyHandedToSocket()  // the body is out: now the wait for its reply
                pump()
            }
            receiveIfWanted()
        case .failure:
            session.connectionClosed()
            pump()
            if closing { closeSocket() }
        }
    }

    private func closeAfterFlush(_ reason: SMTPClientCloseReason) {
        closeReason = reason
        closing = true
        guard sending else { closeSocket(); return }
        // A timeout: the send in flight is (or waits behind) what stalled;
        // it would never complete. Otherwise (a QUIT going out) wait for it,
        // but not beyond the QUIT timeout.
        if case .timedOut = reason { closeSocket(); return }
        if let t = timer { loop.cancelTimer(t) }
        timer = loop.scheduleTimer(after: min(session.configuration.timeouts.quit, timeoutCeiling), onLingerOver)
    }

    private func closeSocket() {
        guard !isClosed else { return }
        isClosed = true
        closing = true
        if let t = timer { loop.cancelTimer(t); timer = nil }
        // With a send or receive in flight the close cancels it; its callback still comes.
        if let s = socket { loop.close(s) }
        dropFileBody()   // never started (a file send in flight drops it when it completes)
        fileBodyTail.clear()
        socket = nil
        handler.clientConnectionDidClose(closeReason)
    }

    @inline(__always) private func enter() { depth += 1 }

    private func leave() {
        depth -= 1
        guard depth == 0, isClosed, !finished, !hasOperationsInFlight else { return }
        finished = true
        handler.clientConnectionDidFinish()
    }
}
