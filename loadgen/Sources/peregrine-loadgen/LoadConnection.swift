import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// One injecting SMTP connection: the handler of an `SMTPClientConnection`
/// (PeregrineTransport: socket, buffers, timers, STARTTLS, close) that sends
/// messages while the generator grants them, QUITs after
/// messages-per-connection, reports every reply, and reconnects through the
/// generator (which backs off after failures).
///
/// Memory ceiling (principle 8): the transport's (see `SMTPClientConnection`):
/// its send buffer holds at most one message (commands and body), so it
/// grows to the largest message size asked for, never beyond. Every session
/// timer is capped at `--timeout`.
final class LoadConnection<Loop: EventLoop>: SMTPClientConnectionHandler {
    unowned let generator: LoadGenerator<Loop>
    let loop: Loop
    private var client: SMTPClientConnection<Loop, LoadConnection<Loop>>!
    private var messagesOnConnection = 0
    private var current: (id: String, started: UInt64, size: Int, sentWall: Int64)?
    private var waitingForGrant = false
    private var tlsCounted = false

    init(generator: LoadGenerator<Loop>, loop: Loop) {
        self.generator = generator
        self.loop = loop
        var config = SMTPClientConfiguration(heloName: generator.options.heloName)
        config.usePipelining = generator.options.pipelining
        client = SMTPClientConnection(loop: loop, configuration: config, handler: self)
        client.timeoutCeiling = UInt64(generator.options.timeout * 1e9)
    }

    func start() {
        guard client.socket == nil, !client.hasOperationsInFlight else { return }
        client.renew()
        messagesOnConnection = 0
        if generator.options.startTLS {
            client.tls = SMTPClientTLS(policy: .required, context: generator.tlsContext, sessionKey: generator.options.target.description)
            tlsCounted = false
        }
        client.connect(to: generator.options.target, from: generator.options.source, timeout: 10_000_000_000)
    }

    func clientConnectionDidConnect(localAddress: SocketAddress?) {
        generator.stats.connectionsOpened += 1
    }

    func clientConnectionDidFailToConnect(_ e: IOError) {
        generator.stats.connectionErrors += 1
        generator.stats.lastConnectionError = "\(e)"
        generator.connectionEnded(self, failed: true)
    }

    /// The generator granted a message (rate and count budget allow one).
    func grant() {
        waitingForGrant = false
        guard client.session.isReady, client.socket != nil else { generator.returnGrant(); return }
        let (envelope, id, size) = generator.makeEnvelope()
        current = (id, monotonicNanoseconds(), size, realtimeNanoseconds())
        generator.stats.sent += 1
        client.send(envelope)
    }

    /// The count or duration is spent: no message for this connection, it QUITs.
    /// (Granting instead would send one more message under an id already used.)
    func budgetSpent() {
        waitingForGrant = false
        guard client.session.isReady, client.socket != nil else { return }
        client.quit()
    }

    func clientConnectionIsReady(_ extensions: SMTPExtensions) {
        let cap = generator.options.messagesPerConnection
        if (cap > 0 && messagesOnConnection >= cap) || generator.isDone {
            client.quit()
        } else if !waitingForGrant {
            waitingForGrant = true
            generator.requestGrant(self)
        }
    }

    func clientConnectionWillSendBody() {
        guard let c = current else { return }
        generator.writeBody(id: c.id, size: c.size, sentWall: c.sentWall) { client.writeBody($0) }
    }

    func clientConnectionDidComplete(_ result: SMTPMessageResult) {
        messagesOnConnection += 1
        guard let c = current else { return }
        current = nil
        let reply = result.finalReply ?? result.recipients.first?.reply ?? result.mailReply
        generator.messageCompleted(id: c.id, started: c.started, sentWall: c.sentWall, reply: reply, result: result)
    }

    func clientConnectionDidEstablishTLS(_ tls: SMTPClientTLS) { generator.stats.tlsSessions += 1 }

    func clientConnectionTLSFailed(_ tls: SMTPClientTLS, handshake: Bool) {
        guard !tlsCounted else { return }
        tlsCounted = true
        generator.stats.tlsFailures += 1
        generator.stats.lastTLSFailure = tls.failure ?? "TLS handshake did not complete"
    }

    func clientConnectionDidClose(_ reason: SMTPClientCloseReason?) {
        if client.session.failedInPhase != nil {
            generator.stats.sessionFailures += 1
            generator.stats.lastSessionFailure = client.session.failureReason ?? reason.map { "\($0)" } ?? "connection lost"
        }
        if waitingForGrant { generator.cancelGrantRequest(self); waitingForGrant = false }
    }

    /// Once per connection, when nothing of it is in flight any more: the
    /// generator counts it out (or reconnects it on a later turn).
    func clientConnectionDidFinish() {
        generator.connectionEnded(self, failed: false, sessionFailed: client.session.failedInPhase != nil)
    }
}
