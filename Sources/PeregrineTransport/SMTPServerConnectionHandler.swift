import PeregrineTLS

/// Connection-level hooks of an `SMTPServerConnection`, in the style of a
/// channel handler: the SMTP decisions go through the session's
/// `SMTPServerSessionDelegate`; these cover what only the connection sees
/// (TLS, the idle timeout, the close). All are called on the loop's thread and
/// have empty defaults. From any of them (and from the session's delegate
/// callbacks) the owner may call the connection's `close()`,
/// `closeAfterNextReply()` and `decide(_:)`: the connection defers what would
/// disturb the session until the session has returned.
public protocol SMTPServerConnectionHandler: AnyObject {
    /// STARTTLS was accepted (its 220 is queued): how the connection goes on.
    func serverConnectionWillStartTLS() -> SMTPServerTLSStart
    /// The TLS handshake ended. `tls` is the layer when it succeeded
    /// (negotiated protocol and cipher), nil when it failed or was refused.
    func serverConnectionDidEndTLSHandshake(_ tls: TLSConnection?)
    /// The client was quiet for the idle timeout: the session's 421 and the close follow
    /// (only the close when the client has not read a reply for that long either).
    func serverConnectionWillTimeOut()
    /// The socket was closed, by either side; no session callbacks follow.
    func serverConnectionDidClose()
}

extension SMTPServerConnectionHandler {
    public func serverConnectionWillStartTLS() -> SMTPServerTLSStart { .handshake }
    public func serverConnectionDidEndTLSHandshake(_ tls: TLSConnection?) {}
    public func serverConnectionWillTimeOut() {}
    public func serverConnectionDidClose() {}
}
