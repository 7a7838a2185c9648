import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// `dummy-smtp-port`: PowerMTA's test listener. It speaks SMTP, accepts every
/// message and discards it: nothing is spooled, relayed or accounted. Routing
/// a test domain to it (`route [127.0.0.1]:PORT`) exercises the whole
/// delivery path without a real receiver.
final class DummySMTPHandler: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    static let discarded = SMTPReply(code: 250, enhancedCode: EnhancedStatusCode(2, 6, 0), "message discarded (dummy-smtp-port)")

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        if case .endOfData = request { return .reply(Self.discarded) }
        return .accept
    }
}

extension LoopWorker {
    func startDummyListener(on address: SocketAddress, reusePort: Bool) throws(IOError) {
        dummyListener = try loop.listen(on: address, options: ListenOptions(backlog: 128, reusePort: reusePort)) { [unowned self] r in
            // Accept failures are retried by the backend; this listener is for tests, so they are not logged.
            if case .success(let c) = r { self.acceptedDummy(c) }
        }
    }

    private func acceptedDummy(_ c: AcceptedConnection) {
        var sessionConfig = SMTPServerConfiguration(hostname: daemon.hostName)
        sessionConfig.banner = "ESMTP Peregrine dummy-smtp-port (messages are discarded)"
        let handler = DummySMTPHandler()
        let session = SMTPServerSession(configuration: sessionConfig, delegate: handler)
        let connection = SMTPServerConnection(loop: loop, socket: c.socket, session: session)
        connection.idleTimeout = policies.config.smtpIdleTimeout.nanoseconds
        connection.sessionTimeout = policies.config.smtpSessionTimeout?.nanoseconds ?? 0
        connection.handler = handler
        let key = ObjectIdentifier(connection)
        dummyConnections[key] = connection
        connection.onClose = { [unowned self] _ in self.dummyConnections[key] = nil }
        connection.start()
    }
}
