#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// The management HTTP listener (`http-mgmt-port`): accepts connections on
/// one loop, parses requests with `HTTPRequestParser`, hands each to the
/// daemon's handler and writes its response. Keep-alive and pipelined
/// requests are served in order, one at a time per connection; a malformed
/// request gets its 4xx/5xx and the connection is closed.
///
/// Bounded (principle 8) so that stalled clients cannot lock the operator
/// out: at most `maxConnections` connections; one more evicts the
/// connection that has waited longest without a complete request (one whose
/// request is with the handler is never evicted). A connection must deliver
/// a complete request within `idleTimeout` of being accepted or answered,
/// however it trickles its bytes; each holds a 16 KiB receive buffer and at
/// most `limits.maxHeadBytes + limits.maxBodyBytes` of request.
///
/// Every method must be called on the loop's thread (`loop.execute` from elsewhere).
public final class ManagementServer<Loop: EventLoop> {
    /// Synchronous handler: returns the response at once.
    public typealias Handler = (HTTPRequest) -> HTTPResponse
    /// Deferred handler: call `respond` exactly once, later, on the loop's thread
    /// (for answers gathered from other loops). Extra calls are ignored.
    public typealias DeferredHandler = (HTTPRequest, _ respond: @escaping (HTTPResponse) -> Void) -> Void

    public struct Options {
        /// Where to listen; loopback unless the configuration says otherwise.
        public var address: SocketAddress
        public var limits: HTTPParserLimits
        /// A connection that has not delivered a complete request this many
        /// nanoseconds after it was accepted or last answered is closed
        /// (bytes trickling in do not extend it).
        public var idleTimeout: UInt64
        /// Connections open at once; one more evicts the longest-waiting idle one.
        public var maxConnections: Int
        /// Serve several requests per connection (HTTP/1.1 default) or close after each.
        public var keepAlive: Bool
        /// SO_REUSEPORT, so that one server per loop can share the address
        /// (the HTTP injection listener runs on every loop, like SMTP's).
        public var reusePort: Bool
        /// The answer to a request the parser refused (bad framing, over a
        /// limit); nil: `HTTPParseError.response`. An API with its own error
        /// format sets it.
        public var parseErrorResponse: (@Sendable (HTTPParseError) -> HTTPResponse)?
        /// TLS from the first byte: called on the loop for each accepted
        /// connection (nil from it: the connection is closed at once). nil: plain HTTP.
        public var makeSecurity: (() -> HTTPConnectionSecurity?)?

        public init(address: SocketAddress, limits: HTTPParserLimits = HTTPParserLimits(),
                    idleTimeout: UInt64 = 10_000_000_000, maxConnections: Int = 32, keepAlive: Bool = true,
                    reusePort: Bool = false, parseErrorResponse: (@Sendable (HTTPParseError) -> HTTPResponse)? = nil) {
            self.address = address; self.limits = limits; self.idleTimeout = idleTimeout
            self.maxConnections = maxConnections; self.keepAlive = keepAlive
            self.reusePort = reusePort; self.parseErrorResponse = parseErrorResponse
        }

        /// `127.0.0.1:PORT`.
        public static func loopback(port: UInt16) -> Options {
            // A literal numeric address cannot fail to parse.
            let addr = (try? SocketAddress(ip: "127.0.0.1", port: port)) ?? .v4(.init())
            return Options(address: addr)
        }
    }

    public let loop: Loop
    public let options: Options
    private let handler: DeferredHandler
    private var listener: Listener?
    private var connections: [Int32: Connection] = [:]
    /// Requests answered so far (including parse errors).
    public private(set) var requestsServed: Int = 0
    /// Called with accept and connection errors (for the daemon's log).
    public var onError: ((IOError) -> Void)?

    public init(loop: Loop, options: Options, handler: @escaping Handler) {
        self.loop = loop
        self.options = options
        self.handler = { request, respond in respond(handler(request)) }
    }

    public init(loop: Loop, options: Options, deferredHandler: @escaping DeferredHandler) {
        self.loop = loop
        self.options = options
        self.handler = deferredHandler
    }

    /// The address actually bound (the kernel's port when 0 was asked), once started.
    public var boundAddress: SocketAddress? { listener?.address }
    public var connectionCount: Int { connections.count }
    /// Connections holding part of a request (tests wait for the server to have read it).
    var connectionsInARequest: Int { connections.values.filter { !$0.busy && !$0.parser.isIdle }.count }

    /// Binds and starts accepting.
    public func start() throws(IOError) {
        guard listener == nil else { return }
        listener = try loop.listen(on: options.address, options: ListenOptions(backlog: 128, reusePort: options.reusePort)) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let accepted):
                self.accept(accepted)
            case .failure(let error):
                if !error.isCancelled { self.onError?(error) }
            }
        }
    }

    private var draining = false
    private var onDrained: (() -> Void)?
    private var drainTimer: TimerHandle?

    /// True once `drain` was called: responses close their connection.
    public var isDraining: Bool { draining }

    /// Graceful stop (daemon shutdown): stops accepting; a request with the
    /// handler gets its response, sent with `Connection: close`; a connection
    /// between requests stays open until its next request is answered (the
    /// handler knows the server is draining) or `deadline` nanoseconds pass,
    /// then closes. A connection whose request has begun to arrive is not
    /// closed at `deadline`: its client sent the head before or during the
    /// drain and gets an answer once the rest comes (closing it with bytes
    /// unread would reset it, and a loaded loop can pass the deadline before
    /// reading a byte that came in time); its request deadline (`idleTimeout`)
    /// still bounds it. `done` runs once no connection is left.
    ///
    /// The listener closes one loop turn later, not at once: connections the
    /// kernel had completed before the drain began (in the backlog, or
    /// accepted with the completion not yet handled) are taken and answered
    /// first. Closing a listener resets every connection still queued on it.
    public func drain(deadline: UInt64, _ done: @escaping () -> Void) {
        draining = true
        onDrained = done
        guard listener != nil else {
            closeListenerAndArmDeadline(deadline)
            return
        }
        listenerCloseTimer = loop.scheduleTimer(after: 0) { [weak self] in
            self?.listenerCloseTimer = nil
            self?.closeListenerAndArmDeadline(deadline)
        }
    }

    private var listenerCloseTimer: TimerHandle?

    private func closeListenerAndArmDeadline(_ deadline: UInt64) {
        if let l = listener {
            loop.closeListener(l)
            listener = nil
        }
        if !connections.isEmpty {
            drainTimer = loop.scheduleTimer(after: deadline) { [weak self] in
                guard let self else { return }
                // One more loop turn before judging: a loop that stalled past the
                // deadline (an injection of many messages) may not have read bytes
                // that came in time (io_uring runs due timers before it submits the
                // receive or reaps its completion).
                self.drainTimer = self.loop.scheduleTimer(after: 0) { [weak self] in
                    guard let self else { return }
                    self.drainTimer = nil
                    self.closeConnectionsBetweenRequests()
                }
            }
        }
        checkDrained()
    }

    /// The drain deadline: a connection still busy closes after its response
    /// is sent, one in the middle of a request after answering it; only one
    /// with nothing of a request, read or waiting in the socket, closes now.
    private func closeConnectionsBetweenRequests() {
        for c in Array(connections.values) where !c.busy && c.parser.isIdle && !c.hasUnreadInput { c.close() }
    }

    private func checkDrained() {
        guard draining, listener == nil, listenerCloseTimer == nil, connections.isEmpty, let done = onDrained else { return }
        onDrained = nil
        if let t = drainTimer { loop.cancelTimer(t); drainTimer = nil }
        done()
    }

    /// Stops accepting and closes every connection (in-flight responses are dropped).
    public func stop() {
        if let t = listenerCloseTimer { loop.cancelTimer(t); listenerCloseTimer = nil }
        if let l = listener {
            loop.closeListener(l)
            listener = nil
        }
        for c in Array(connections.values) { c.close() }
    }

    private func accept(_ accepted: AcceptedConnection) {
        // Draining: a connection the kernel accepted before the listener closed
        // (its completion came after) is served like the others, not reset.
        guard listener != nil || (draining && onDrained != nil) else {
            loop.close(accepted.socket)
            return
        }
        if connections.count >= options.maxConnections {
            // Full: make room by closing the connection that has waited
            // longest without a request, so that stalled clients cannot
            // keep a real one (ctl sends its request at once) out.
            guard let victim = connections.values.filter({ !$0.busy }).min(by: { $0.lastActivity < $1.lastActivity }) else {
                loop.close(accepted.socket)
                return
            }
            victim.close()
        }
        var security: HTTPConnectionSecurity?
        if let make = options.makeSecurity {
            guard let s = make() else {
                loop.close(accepted.socket)
                return
            }
            security = s
        }
        let c = Connection(server: self, socket: accepted.socket, peer: accepted.peer, local: accepted.local,
                           security: security)
        connections[accepted.socket.fd] = c
        c.begin()
    }

    fileprivate func connectionClosed(_ c: Connection) {
        if connections[c.socket.fd] === c { connections[c.socket.fd] = nil }
        checkDrained()
    }

    fileprivate func dispatch(_ request: HTTPRequest, _ respond: @escaping (HTTPResponse) -> Void) {
        requestsServed += 1
        handler(request, respond)
    }

    fileprivate func countError() { requestsServed += 1 }

    // MARK: Connection

    fileprivate final class Connection {
        /// Strong: a closed connection drops out of `connections`, which breaks the cycle.
        let server: ManagementServer
        let socket: Socket
        let peer: SocketAddress
        let local: SocketAddress
        var loop: Loop { server.loop }
        let receiveBuffer: UnsafeMutableRawBufferPointer
        var parser: HTTPRequestParser
        /// TLS (`Options.makeSecurity`): received bytes go through it to the parser, responses are sealed by it.
        let security: HTTPConnectionSecurity?
        /// Operations the loop still owns (receive, send); the buffer is freed at 0 after close.
        var outstanding = 0
        var receiving = false
        var busy = false          // a request is with the handler or its response is being sent
        var peerClosed = false
        var closed = false
        var idleTimer: TimerHandle?
        var lastActivity: UInt64 = 0

        init(server: ManagementServer, socket: Socket, peer: SocketAddress, local: SocketAddress,
             security: HTTPConnectionSecurity?) {
            self.server = server
            self.security = security
            self.socket = socket
            self.peer = peer
            self.local = local
            self.receiveBuffer = .allocate(byteCount: 16 * 1024, alignment: 8)
            self.parser = HTTPRequestParser(limits: server.options.limits)
        }

        func begin() {
            lastActivity = loop.now
            armIdleTimer(after: server.options.idleTimeout)
            processNext()
        }

        func armIdleTimer(after delay: UInt64) {
            idleTimer = loop.scheduleTimer(after: delay) { [weak self] in
                guard let self, !self.closed else { return }
                self.idleTimer = nil
                let idle = self.loop.now &- self.lastActivity
                if self.busy || idle < self.server.options.idleTimeout {
                    let remaining = self.busy ? self.server.options.idleTimeout
                                              : self.server.options.idleTimeout - idle
                    self.armIdleTimer(after: max(remaining, 1_000_000))
                } else {
                    self.close()
                }
            }
        }

        /// Serves the next buffered request, or reads more bytes.
        func processNext() {
            guard !closed, !busy else { return }
            switch parser.next() {
            case .none:
                if peerClosed { close(); return }
                startReceive()
            case .request(var request)?:
                request.remoteAddress = peer
                request.localAddress = local
                busy = true
                let keepAlive = server.options.keepAlive && request.keepAlive && !peerClosed
                let isHead = request.method == "HEAD"
                var answered = false
                server.dispatch(request) { [weak self] response in
                    guard let self, !answered else { return }
                    answered = true
                    // Draining (shutdown): the answer is the connection's last.
                    let keep = keepAlive && !self.server.draining && !response.closesConnection
                    self.respond(response.serialize(keepAlive: keep, includeBody: !isHead), thenClose: !keep)
                }
            case .failure(let error)?:
                busy = true
                server.countError()
                let response = server.options.parseErrorResponse?(error) ?? error.response
                respond(response.serialize(keepAlive: false), thenClose: true)
            }
        }

        func startReceive() {
            guard !receiving, !closed else { return }
            receiving = true
            outstanding += 1
            loop.receive(socket, into: receiveBuffer) { [self] result in
                outstanding -= 1
                receiving = false
                if closed { releaseIfDone(); return }
                switch result {
                case .success(0):
                    peerClosed = true
                    // A request may still be complete in the parser (sent before the FIN).
                    processNext()
                case .success(let n):
                    // No `lastActivity` update: the request must be complete
                    // within idleTimeout, however slowly its bytes come (a
                    // stalled TLS handshake included).
                    let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n])
                    guard let security else {
                        parser.feed(bytes)
                        processNext()
                        return
                    }
                    let ok = security.receive(bytes) { parser.feed($0) }
                    if security.peerClosed { peerClosed = true }
                    let out = security.takeOutgoing()
                    if !ok {
                        // Nothing is answered in HTTP (a plaintext client cannot read it): the alert, then close.
                        if out.isEmpty { close() } else { write(out) { [self] _ in close() } }
                        return
                    }
                    if out.isEmpty { processNext(); return }
                    write(out) { [self] sent in if sent { processNext() } else { close() } }
                case .failure(let error):
                    if !error.isCancelled { server.onError?(error) }
                    close()
                }
            }
        }

        /// Sends a response (sealed first with TLS), then serves the next request or closes.
        func respond(_ plaintext: [UInt8], thenClose: Bool) {
            guard !closed else { return }
            var bytes = plaintext
            if let security {
                guard let sealed = security.seal(plaintext, closing: thenClose) else { close(); return }
                bytes = sealed
            }
            write(bytes) { [self] sent in
                busy = false
                lastActivity = loop.now
                if sent && !thenClose { processNext() } else { close() }
            }
        }

        /// Sends `bytes` whole; `done(true)` once sent, `done(false)` when the send failed
        /// (not called when the connection closed meanwhile).
        func write(_ bytes: [UInt8], _ done: @escaping (Bool) -> Void) {
            guard !closed else { return }
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
            bytes.withUnsafeBytes { out.copyMemory(from: $0) }
            outstanding += 1
            loop.send(socket, UnsafeRawBufferPointer(rebasing: out[0..<bytes.count])) { [self] result in
                out.deallocate()
                outstanding -= 1
                if closed { releaseIfDone(); return }
                switch result {
                case .success:
                    done(true)
                case .failure(let error):
                    if !error.isCancelled { server.onError?(error) }
                    done(false)
                }
            }
        }

        func close() {
            guard !closed else { return }
            closed = true
            if let t = idleTimer { loop.cancelTimer(t); idleTimer = nil }
            loop.close(socket)
            server.connectionClosed(self)
            releaseIfDone()
        }

        /// Bytes the peer sent that the loop has not read yet (peeked, left in
        /// the socket for the receive): closing now would reset the connection.
        var hasUnreadInput: Bool {
            var byte: UInt8 = 0
            return recv(socket.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
        }

        /// Frees the receive buffer once the loop has given back every operation
        /// (pending callbacks retain the connection until then).
        func releaseIfDone() {
            if outstanding == 0 && !bufferFreed {
                bufferFreed = true
                receiveBuffer.deallocate()
            }
        }
        var bufferFreed = false
    }
}
