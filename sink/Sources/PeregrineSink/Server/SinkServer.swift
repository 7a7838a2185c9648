#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineHTTP
import PeregrineSMTP
import PeregrineTransport

/// Where one listener sends its connections.
public struct SinkBinding: Sendable {
    public var address: SocketAddress
    public var providerIndex: Int
    public init(address: SocketAddress, providerIndex: Int) {
        self.address = address; self.providerIndex = providerIndex
    }
}

/// The sink on one event loop: its listeners (one per MX address of every
/// profile, SO_REUSEPORT so that every loop has its own), its connections,
/// and on the first loop the stats port and the DNS responder.
public final class SinkServer<Loop: EventLoop> {
    public let loop: Loop
    let shared: SinkShared
    private(set) var listeners: [Listener] = []
    private var providerByListener: [Int32: SinkProvider] = [:]
    private var configurations: [SMTPServerConfiguration] = []
    private var connections: [ObjectIdentifier: SMTPServerConnection<Loop>] = [:]
    /// Sockets a black-holed MX host accepted: held open and never answered;
    /// what they send is read and dropped, so a peer's close frees the socket.
    private var held: Set<Socket> = []
    /// One discard buffer for every held socket (its contents are never looked at).
    private let discard = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 16)
    private var stats: ManagementServer<Loop>?
    private var dns: SinkDNSResponder<Loop>?

    deinit { discard.deallocate() }

    public init(loop: Loop, shared: SinkShared) {
        self.loop = loop
        self.shared = shared
        configurations = shared.policy.providers.map { p in
            var c = SMTPServerConfiguration(hostname: p.profile.hostname)
            c.banner = p.profile.banner ?? "ESMTP peregrine-sink (\(p.profile.name))"
            c.startTLSEnabled = shared.tlsContext != nil
            // Per-provider protocol limits the SMTP session enforces with its own texts.
            if let size = p.profile.maxMessageSize { c.maxMessageSize = size }
            if let line = p.profile.maxLineLength { c.maxDataLineLength = line }
            // The policy answers max-rcpt-per-msg with the provider's text; the session's own cap stays above it.
            if let r = p.profile.maxRecipients { c.maxRecipients = max(c.maxRecipients, r.value + 1) }
            return c
        }
    }

    /// Binds every listener; returns what was bound (ports chosen by the kernel when 0 was asked).
    @discardableResult
    public func listen(_ bindings: [SinkBinding], reusePort: Bool) throws(IOError) -> [SinkBinding] {
        var bound: [SinkBinding] = []
        for b in bindings {
            let provider = shared.policy.providers[b.providerIndex]
            // Which of the provider's MX hosts this is (per-MX limits); 0 for an address not in `mx`.
            let mx = provider.profile.mx.firstIndex(of: b.address.ip) ?? 0
            let l = try loop.listen(on: b.address, options: ListenOptions(backlog: 4096, reusePort: reusePort)) { [unowned self] r in
                self.accepted(r, provider: provider, mx: mx)
            }
            listeners.append(l)
            providerByListener[l.fd] = provider
            if let f = provider.mxFaults[mx], f.kind == .down { closeWhenDown(l, at: f.afterNanos) }
            bound.append(SinkBinding(address: l.address, providerIndex: b.providerIndex))
        }
        return bound
    }

    public func serveStats(on address: SocketAddress) throws(IOError) -> SocketAddress {
        let server = ManagementServer(loop: loop, options: .init(address: address, keepAlive: false)) { [shared] request in
            SinkStatsHTTP.respond(to: request, shared: shared)
        }
        try server.start()
        stats = server
        return server.boundAddress ?? address
    }

    public func serveDNS(on address: SocketAddress) throws(IOError) -> SocketAddress {
        var zone = SinkDNSZone(profiles: shared.policy.providers.map(\.profile))
        zone.faults = shared.dnsFaults
        let d = SinkDNSResponder(loop: loop, zone: zone)
        let a = try d.start(on: address)
        dns = d
        return a
    }

    private func accepted(_ result: Result<AcceptedConnection, IOError>, provider: SinkProvider, mx: Int) {
        guard case .success(let a) = result else { return }
        let ip = a.peer.ip
        let now = loop.now
        let fault = shared.lock.withLock { () -> SinkMXFaultState? in
            guard let f = provider.fault(mx: mx, sinceStart: monotonicNanoseconds() &- shared.startedAt) else { return nil }
            if f.kind == .blackhole { provider.blackholed &+= 1 }
            if f.kind == .reset || f.kind == .down { provider.reset &+= 1 }
            return f
        }
        switch fault?.kind {
        case .blackhole?:
            // `--mx-fault …=blackhole`: the TCP handshake completed, no greeting ever comes.
            held.insert(a.socket)
            drain(a.socket)
            return
        case .reset?, .down?:
            // `reset` (and a connection that slipped in before a `down` host's listener closed):
            // an RST instead of a greeting. SO_LINGER 0 makes close() send it.
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(a.socket.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            loop.close(a.socket)
            return
        default: break
        }
        var greeting: SinkDecision = .accept
        var latency: UInt64 = 0
        var conn: SinkConnection?
        shared.lock.withLock {
            let (c, d) = shared.policy.connect(provider: provider, ip: ip, mx: mx, now: now)
            conn = c
            greeting = d
            latency = shared.policy.latency(c, .greeting)
        }
        guard let conn else { loop.close(a.socket); return }
        if let f = fault, case .slow = f.kind {
            // `--mx-fault …=slow=DELAY`: this host answers everything late, the greeting too.
            conn.extraLatency = f.delayNanos
            latency &+= f.delayNanos
        }
        let handler = SinkSMTPHandler(loop: loop, shared: shared, conn: conn, greeting: greeting, latency: latency)
        let session = SMTPServerSession(configuration: configurations[provider.index], delegate: handler)
        let connection = SMTPServerConnection(loop: loop, socket: a.socket, session: session)
        connection.idleTimeout = provider.idleNanos
        connection.tlsContext = shared.tlsContext
        connection.handler = handler
        handler.connection = connection
        let key = ObjectIdentifier(connection)
        connections[key] = connection
        connection.onClose = { [unowned self] _ in self.connections[key] = nil }
        connection.start()
    }

    /// `--mx-fault …=down`: the host's listener closes when the fault starts,
    /// so connections to it are refused by the kernel, as a dead host's are.
    private func closeWhenDown(_ l: Listener, at afterNanos: UInt64) {
        let elapsed = monotonicNanoseconds() &- shared.startedAt
        let close = { [unowned self] in
            guard let i = self.listeners.firstIndex(where: { $0.fd == l.fd }) else { return }
            self.listeners.remove(at: i)
            // Linux turns a listening socket that is shut down back into a
            // closed one at once, so the next SYN is refused even on a backend
            // whose closeListener closes the descriptor later (Dispatch's cancel
            // handler); then the loop lets go of it.
            _ = Glibc.shutdown(l.fd, Int32(SHUT_RDWR))
            self.loop.closeListener(l)
        }
        if elapsed >= afterNanos { close() } else { _ = loop.scheduleTimer(after: afterNanos - elapsed, close) }
    }

    /// Reads and drops what a black-holed peer sends until it closes.
    private func drain(_ socket: Socket) {
        loop.receive(socket, into: discard) { [unowned self] r in
            guard self.held.contains(socket) else { return }   // closed at shutdown
            if case .success(let n) = r, n > 0 {
                self.drain(socket)
            } else {
                self.held.remove(socket)
                self.loop.close(socket)
            }
        }
    }

    /// Closes listeners and every connection (on the loop's thread).
    public func shutdown() {
        for l in listeners { loop.closeListener(l) }
        listeners.removeAll()
        for c in Array(connections.values) { c.close() }
        for s in held { loop.close(s) }
        held.removeAll()
        stats?.stop()
        dns?.shutdown()
    }

    public var openConnections: Int { connections.count }
}
