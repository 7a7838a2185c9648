import PeregrineIO

/// Why a command got no reply from Redis.
package enum RedisError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Not connected (connecting failed, or waiting to reconnect): the caller falls back.
    case unavailable(String)
    /// The outgoing queue is full (`maxOutstanding` commands unanswered).
    case queueFull
    /// No reply within the command timeout; the connection was dropped.
    case timedOut
    /// The connection broke (or sent a malformed reply) with this command outstanding.
    case connectionLost(String)
    /// `close()` was called.
    case closed

    package var description: String {
        switch self {
        case .unavailable(let why): return "Redis unavailable: \(why)"
        case .queueFull: return "Redis command queue full"
        case .timedOut: return "Redis command timed out"
        case .connectionLost(let why): return "Redis connection lost: \(why)"
        case .closed: return "Redis connection closed"
        }
    }
}

package struct RedisConnectionOptions: Sendable {
    package var connectTimeout: UInt64
    /// How long the oldest outstanding command may wait for its reply before
    /// the connection is judged dead, dropped and reconnected.
    package var commandTimeout: UInt64
    /// Commands written and not yet answered, at most; more fail at once with `.queueFull`.
    package var maxOutstanding: Int
    /// Reconnect delays: `initialBackoff` doubling per failed attempt up to
    /// `maxBackoff`, each drawn uniformly from [delay/2, delay] so that nodes
    /// that lost Redis together do not return in step.
    package var initialBackoff: UInt64
    package var maxBackoff: UInt64
    package var parserLimits: RESPParser.Limits
    /// Seeds the jitter (tests make it reproducible).
    package var jitterSeed: UInt64

    package init(connectTimeout: UInt64 = 2_000_000_000, commandTimeout: UInt64 = 2_000_000_000,
                maxOutstanding: Int = 10_000, initialBackoff: UInt64 = 50_000_000, maxBackoff: UInt64 = 5_000_000_000,
                parserLimits: RESPParser.Limits = .init(), jitterSeed: UInt64 = 0x5EED) {
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maxOutstanding = maxOutstanding
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.parserLimits = parserLimits
        self.jitterSeed = jitterSeed
    }
}

/// One Redis connection on a loop: commands are written as they are issued
/// (pipelined, several per send) and their replies matched in FIFO order,
/// as Redis answers one connection's commands in order.
///
/// Failure: a connect failure, a broken socket, a malformed reply or the
/// oldest command outliving `commandTimeout` fails every outstanding command,
/// closes the socket and reconnects after a capped exponential backoff with
/// jitter. While not connected, commands fail at once with `.unavailable`
/// (the cluster layer then uses its fallback share rather than queueing work
/// behind a dead server); while the connection is being made they queue.
///
/// Loop-confined: every method must be called on the loop's thread.
package final class RedisConnection<Loop: EventLoop> {
    /// `handshaking`: the socket is open and the first command (PING) not
    /// answered yet; only an answer makes the connection `connected` (a bare
    /// TCP accept, a proxy with no Redis behind it, is not Redis).
    package enum State: Equatable, Sendable { case idle, connecting, handshaking, connected, closing, waitingToReconnect, closed }

    package let loop: Loop
    package let address: SocketAddress
    package let options: RedisConnectionOptions
    package private(set) var state: State = .idle
    /// Called on every change between connected and not (not on each failed retry).
    package var onConnectedChange: (Bool) -> Void = { _ in }
    /// Connects Redis answered (the first one included).
    package private(set) var connects = 0
    /// Failed connect attempts since the last success.
    package private(set) var failedAttempts = 0
    /// The last failure, for status and logs.
    package private(set) var lastError: String?
    /// The wait chosen before the latest reconnect attempt.
    package private(set) var lastReconnectDelay: UInt64 = 0

    package typealias Reply = (Result<RESPValue, RedisError>) -> Void

    private var socket: Socket?
    private var parser: RESPParser
    private var output = ByteBuffer(capacity: 4096)
    private var sendBuffer = ByteBuffer(capacity: 4096)
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// Outstanding commands, oldest at `head`: reply callbacks and deadlines.
    private var replies: [Reply?] = []
    private var deadlines: [UInt64] = []
    private var head = 0
    private var receiving = false
    private var sending = false
    private var connectInFlight = false
    private var timer: TimerHandle?
    private var random: SeededRandom
    private var onReceive: ((Result<Int, IOError>) -> Void)!
    private var onSend: ((Result<Void, IOError>) -> Void)!
    private var onCommandTimer: (() -> Void)!
    private var onReconnectTimer: (() -> Void)!
    /// Holds the connection while the loop may still call back into it.
    private var keepAlive: RedisConnection<Loop>?

    package init(loop: Loop, address: SocketAddress, options: RedisConnectionOptions = .init(), receiveBufferSize: Int = 16384) {
        self.loop = loop
        self.address = address
        self.options = options
        parser = RESPParser(limits: options.parserLimits)
        random = SeededRandom(seed: options.jitterSeed)
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
        onReceive = { [unowned self] r in self.received(r) }
        onSend = { [unowned self] r in self.sent(r) }
        onCommandTimer = { [unowned self] in self.timer = nil; self.checkDeadline() }
        onReconnectTimer = { [unowned self] in self.timer = nil; if self.state == .waitingToReconnect { self.connect() } }
    }

    deinit { receiveBuffer.deallocate() }

    /// Commands written and not yet answered.
    package var outstanding: Int { replies.count - head }
    package var isConnected: Bool { state == .connected }

    /// Starts connecting (and reconnecting, until `close`).
    package func start() {
        guard state == .idle else { return }
        keepAlive = self
        connect()
    }

    /// Sends one command of `argumentCount` arguments written by `write`;
    /// `reply` runs once, on the loop, with Redis's reply (an error reply such
    /// as `-NOSCRIPT` is a `.success(.error)`: the caller knows what it means)
    /// or why there is none. Never runs `reply` before returning.
    package func send(argumentCount: Int, _ write: (inout RESPCommandWriter) -> Void, reply: @escaping Reply) {
        switch state {
        case .connected, .connecting, .handshaking:
            break
        case .idle:
            failSoon(reply, .unavailable("not started")); return
        case .closed:
            failSoon(reply, .closed); return
        case .closing, .waitingToReconnect:
            failSoon(reply, .unavailable(lastError ?? "reconnecting")); return
        }
        guard outstanding < options.maxOutstanding else { failSoon(reply, .queueFull); return }
        output.appendRedisCommand(argumentCount: argumentCount, write)
        if head > 0 && head >= replies.count / 2 {   // keep the FIFO's arrays from growing forever
            replies.removeSubrange(0..<head)
            deadlines.removeSubrange(0..<head)
            head = 0
        }
        replies.append(reply)
        deadlines.append(loop.now &+ options.commandTimeout)
        if socketOpen {
            if timer == nil { armCommandTimer() }
            flush()
        }
    }

    /// Convenience for commands given as text (tests, rare commands).
    package func send(_ arguments: [String], reply: @escaping Reply) {
        send(argumentCount: arguments.count, { w in for a in arguments { w.argument(a.utf8) } }, reply: reply)
    }

    /// Stops for good: outstanding commands fail with `.closed`.
    package func close() {
        guard state != .closed else { return }
        let wasConnected = state == .connected
        state = .closed
        if let t = timer { loop.cancelTimer(t); timer = nil }
        failOutstanding(.closed)
        if let s = socket { loop.close(s); socket = nil }
        if wasConnected { onConnectedChange(false) }
        releaseIfIdle()
    }

    // MARK: Connecting

    private func connect() {
        state = .connecting
        connectInFlight = true
        loop.connect(to: address, from: nil, timeout: options.connectTimeout) { [unowned self] result in
            self.connectInFlight = false
            switch result {
            case .success(let s):
                guard self.state == .connecting else { self.loop.close(s); self.releaseIfIdle(); return }
                self.socket = s
                self.state = .handshaking
                self.parser.reset()
                self.startHandshake()
                self.armCommandTimer()
                self.flush()
                self.readIfWanted()
            case .failure(let e):
                guard self.state == .connecting else { self.releaseIfIdle(); return }
                self.fail("connect to \(self.address): \(e)", with: .unavailable("connect to \(self.address): \(e)"))
            }
        }
    }

    /// Puts a PING ahead of the commands queued while connecting: its answer
    /// (within `commandTimeout`, like any command) makes the connection
    /// `connected`. Until then nothing is reported and the attempt counts as
    /// failed if the peer closes or stays silent, so the reconnect backs off
    /// instead of flapping between connected and not.
    private func startHandshake() {
        var first = ByteBuffer(capacity: max(64, output.readableBytes + 16))
        first.appendRedisCommand(argumentCount: 1) { w in w.argument("PING".utf8) }
        output.withUnsafeReadableBytes { first.append($0) }
        output = first
        replies.insert({ [unowned self] r in self.handshakeAnswered(r) }, at: head)
        deadlines.insert(loop.now &+ options.commandTimeout, at: head)
    }

    private func handshakeAnswered(_ r: Result<RESPValue, RedisError>) {
        guard state == .handshaking else { return }
        switch r {
        case .success(.error(let e)):
            // -LOADING, -NOAUTH, ...: Redis is there but cannot serve.
            let why = "Redis answered PING with \(String(decoding: e, as: UTF8.self))"
            fail(why, with: .unavailable(why))
        case .success:
            state = .connected
            connects += 1
            failedAttempts = 0
            onConnectedChange(true)
        case .failure:
            break   // the connection's failure path reports it
        }
    }

    /// The socket is open (handshaking or connected): commands go out, replies come in.
    private var socketOpen: Bool { state == .connected || state == .handshaking }

    /// Drops the connection (or the attempt): fails what is outstanding, then
    /// once the socket's operations have come back, waits and reconnects.
    private func fail(_ why: String, with error: RedisError) {
        guard socketOpen || state == .connecting else { return }
        let wasConnected = state == .connected
        lastError = why
        state = .closing
        if let t = timer { loop.cancelTimer(t); timer = nil }
        if let s = socket { loop.close(s); socket = nil }
        output.clear()
        scheduleReconnectIfDrained()
        // Callbacks last, so they see the new state; the mode change first, so
        // a caller's failure handling already knows Redis is gone.
        if wasConnected { onConnectedChange(false) }
        failOutstanding(error)
    }

    /// Reconnecting waits for the old socket's receive and send to return, so
    /// that a late callback of the old socket never lands in the new one's state.
    private func scheduleReconnectIfDrained() {
        guard state == .closing, !receiving, !sending else { return }
        state = .waitingToReconnect
        failedAttempts += 1
        let delay = Self.reconnectDelay(attempt: failedAttempts, initial: options.initialBackoff,
                                        cap: options.maxBackoff, random: &random)
        lastReconnectDelay = delay
        timer = loop.scheduleTimer(after: delay, onReconnectTimer)
    }

    /// The wait before reconnect attempt `attempt` (1 = after the first
    /// failure): `initial` doubled per attempt, capped at `cap`, drawn
    /// uniformly from [ceiling/2, ceiling] (jitter).
    package static func reconnectDelay(attempt: Int, initial: UInt64, cap: UInt64,
                                      random: inout SeededRandom) -> UInt64 {
        let shift = UInt64(min(max(attempt - 1, 0), 40))
        let doubled = initial.leadingZeroBitCount > shift ? initial << shift : cap
        let ceiling = min(cap, doubled)
        return ceiling / 2 + UInt64(random.unit() * Double(ceiling - ceiling / 2))
    }

    // MARK: I/O

    private func readIfWanted() {
        guard socketOpen, !receiving, let s = socket else { return }
        receiving = true
        loop.receive(s, into: receiveBuffer, onReceive)
    }

    private func received(_ r: Result<Int, IOError>) {
        receiving = false
        guard socketOpen else { afterIO(); return }
        switch r {
        case .success(0):
            fail("Redis closed the connection", with: .connectionLost("Redis closed the connection"))
            return
        case .failure(let e):
            fail("receive: \(e)", with: .connectionLost("receive: \(e)"))
            return
        case .success(let n):
            parser.feed(UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<n]))
            do {
                while let v = try parser.next() {
                    guard head < replies.count else {
                        fail("reply with no command outstanding", with: .connectionLost("unexpected reply"))
                        return
                    }
                    let reply = replies[head]
                    replies[head] = nil
                    head += 1
                    reply?(.success(v))
                    guard socketOpen else { return }   // the callback closed us
                }
            } catch {
                fail("\(error)", with: .connectionLost("\(error)"))
                return
            }
            if head == replies.count { replies.removeAll(keepingCapacity: true); deadlines.removeAll(keepingCapacity: true); head = 0 }
            readIfWanted()
        }
    }

    private func flush() {
        guard socketOpen, !sending, let s = socket, !output.isEmpty else { return }
        swap(&output, &sendBuffer)
        output.clear()
        sending = true
        sendBuffer.withUnsafeReadableBytes { loop.send(s, $0, onSend) }
    }

    private func sent(_ r: Result<Void, IOError>) {
        sending = false
        sendBuffer.clear()
        guard socketOpen else { afterIO(); return }
        if case .failure(let e) = r { fail("send: \(e)", with: .connectionLost("send: \(e)")); return }
        flush()
    }

    private func afterIO() {
        if state == .closing { scheduleReconnectIfDrained() } else { releaseIfIdle() }
    }

    // MARK: Timeouts and bookkeeping

    private func armCommandTimer() {
        guard head < deadlines.count else { return }
        let now = loop.now
        let due = deadlines[head]
        timer = loop.scheduleTimer(after: due > now ? due - now : 0, onCommandTimer)
    }

    private func checkDeadline() {
        guard socketOpen, head < deadlines.count else { return }
        if deadlines[head] <= loop.now {
            fail("no reply within \(options.commandTimeout / 1_000_000) ms", with: .timedOut)
        } else {
            armCommandTimer()
        }
    }

    private func failOutstanding(_ error: RedisError) {
        let pending = replies[head...]
        replies.removeAll(keepingCapacity: true)
        deadlines.removeAll(keepingCapacity: true)
        head = 0
        for reply in pending { reply?(.failure(error)) }
    }

    /// Failures outside a loop callback are delivered in a later turn, as the
    /// loop's own completions are (no re-entrant callback inside `send`).
    private func failSoon(_ reply: @escaping Reply, _ error: RedisError) {
        loop.scheduleTimer(after: 0) { reply(.failure(error)) }
    }

    private func releaseIfIdle() {
        guard state == .closed, !receiving, !sending, !connectInFlight, socket == nil else { return }
        keepAlive = nil
    }
}
