import PeregrineIO
import PeregrineSMTP

/// What the owner of an `SMTPClientConnection` decides, in the style of a
/// channel handler (the client-side mirror of `SMTPServerConnectionHandler`):
/// the next message, the body, what a result or a close means. The
/// connection does the rest (socket, buffers, timers, STARTTLS, close).
///
/// All calls come on the loop's thread. From any of them the handler may
/// call the connection's `send(_:)`, `quit()`, `abandon(_:)` (and `connect`
/// again from `clientConnectionDidFailToConnect`); it never touches the socket.
public protocol SMTPClientConnectionHandler: AnyObject {
    /// The socket is connected; the session starts right after this returns
    /// (set the connection's `tls` here). `localAddress`: the bound source.
    func clientConnectionDidConnect(localAddress: SocketAddress?)
    /// The connect failed. The handler may `connect` again (the next MX host).
    func clientConnectionDidFailToConnect(_ error: IOError)
    /// EHLO/HELO was answered (also again after STARTTLS): before any TLS
    /// decision, so the handler knows the extensions a failure is reported with.
    func clientConnectionDidNegotiate(_ extensions: SMTPExtensions)
    /// The session is ready for a message (TLS is settled): `send(_:)`,
    /// `quit()`, or neither for now (an idle connection, `send` later).
    func clientConnectionIsReady(_ extensions: SMTPExtensions)
    /// After the 354: write the body with `writeBody(_:)`, in one or more
    /// chunks. The connection writes the end marker when this returns.
    func clientConnectionWillSendBody()
    /// A transaction ended (delivered, refused, or failed with the session).
    func clientConnectionDidComplete(_ result: SMTPMessageResult)
    /// The TLS handshake completed (`tls` has the protocol and cipher).
    func clientConnectionDidEstablishTLS(_ tls: SMTPClientTLS)
    /// TLS was wanted and not had. `handshake` false: required but not
    /// offered, refused or without a context (the session QUITs); true: a
    /// handshake started and did not complete. `tls.failure` says why.
    func clientConnectionTLSFailed(_ tls: SMTPClientTLS, handshake: Bool)
    /// The socket was closed. `reason` is the session's end; nil when the
    /// connection was quit or abandoned while it was still connecting.
    func clientConnectionDidClose(_ reason: SMTPClientCloseReason?)
    /// Closed, and no operation of the connection is outstanding: the
    /// handler may drop it, or `renew()` and `connect` it again.
    func clientConnectionDidFinish()
}

extension SMTPClientConnectionHandler {
    public func clientConnectionDidConnect(localAddress: SocketAddress?) {}
    public func clientConnectionDidNegotiate(_ extensions: SMTPExtensions) {}
    public func clientConnectionDidEstablishTLS(_ tls: SMTPClientTLS) {}
    public func clientConnectionTLSFailed(_ tls: SMTPClientTLS, handshake: Bool) {}
    public func clientConnectionDidClose(_ reason: SMTPClientCloseReason?) {}
    public func clientConnectionDidFinish() {}
}
