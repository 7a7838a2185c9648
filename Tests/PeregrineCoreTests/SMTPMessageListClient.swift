import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// One message for `SMTPMessageListClient`: the envelope and the body bytes
/// (any line ends; the session CRLF-normalises and dot-stuffs them).
struct SMTPOutgoingMessage {
    var envelope: SMTPClientEnvelope
    var body: [UInt8]
}

/// The tests' handler of an `SMTPClientConnection`: sends what `nextMessage`
/// returns while the connection is usable, QUITs when it returns nil,
/// reports every result through `onResult` and the end through `onClose`
/// (connect failures become `.connectionLost`). Keeps itself alive from
/// `connect` until the connection has finished.
final class SMTPMessageListClient<Loop: EventLoop>: SMTPClientConnectionHandler {
    private(set) var connection: SMTPClientConnection<Loop, SMTPMessageListClient<Loop>>!
    var nextMessage: () -> SMTPOutgoingMessage? = { nil }
    var onResult: (SMTPMessageResult) -> Void = { _ in }
    /// Called once at the end.
    var onClose: (SMTPClientCloseReason) -> Void = { _ in }
    /// Called once the TLS handshake has completed.
    var onTLSEstablished: ((SMTPMessageListClient<Loop>) -> Void)?
    var tls: SMTPClientTLS? {
        get { connection.tls }
        set { connection.tls = newValue }
    }
    private var currentBody: [UInt8] = []
    private var keepAlive: SMTPMessageListClient<Loop>?

    init(loop: Loop, configuration: SMTPClientConfiguration) {
        connection = SMTPClientConnection(loop: loop, configuration: configuration, handler: self)
    }

    func connect(to address: SocketAddress, from source: SocketAddress? = nil, timeout: UInt64 = 120_000_000_000) {
        keepAlive = self
        connection.connect(to: address, from: source, timeout: timeout)
    }

    func clientConnectionDidFailToConnect(_ error: IOError) { end(.connectionLost) }

    func clientConnectionIsReady(_ extensions: SMTPExtensions) {
        if let m = nextMessage() {
            currentBody = m.body
            connection.send(m.envelope)
        } else {
            connection.quit()
        }
    }

    func clientConnectionWillSendBody() {
        connection.writeBody(currentBody)
        currentBody = []
    }

    func clientConnectionDidComplete(_ result: SMTPMessageResult) { onResult(result) }

    func clientConnectionDidEstablishTLS(_ tls: SMTPClientTLS) { onTLSEstablished?(self) }

    func clientConnectionDidFinish() { end(connection.closeReason ?? .connectionLost) }

    private func end(_ why: SMTPClientCloseReason) {
        guard keepAlive != nil else { return }
        onClose(why)
        nextMessage = { nil }
        onResult = { _ in }
        onClose = { _ in }
        // Dropped on a later turn: the connection is still on the stack.
        let loop = connection.loop
        loop.scheduleTimer(after: 0) { [self] in self.keepAlive = nil }
    }
}
