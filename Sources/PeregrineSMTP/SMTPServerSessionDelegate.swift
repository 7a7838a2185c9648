/// A decision the server session asks its owner for.
public enum SMTPServerRequest: Sendable, Hashable {
    /// A new connection: greet (accept) or refuse with 421/554.
    case connection
    case helo(SMTPHelo)
    case mailFrom(SMTPMailFrom)
    case rcptTo(SMTPRcptTo)
    /// The body is complete (every chunk has been delivered). Accepting means the
    /// message is safely stored: this is where the spool's group commit sits.
    case endOfData(SMTPMessageInfo)
    case auth(SMTPAuthCredentials)
    case startTLS
}

/// The owner's answer.
public enum SMTPServerDecision: Sendable, Hashable {
    /// Go on with the session's standard positive reply.
    case accept
    /// Send this reply instead (a 421 also closes the connection).
    case reply(SMTPReply)
    /// Decided later through `SMTPServerSession.decide(_:)`. Until then the
    /// session buffers further input and sends nothing more.
    case pending
}

/// The owner of a server session. All calls happen synchronously inside the
/// session's methods (`start`, `receive`, `decide`, `connectionClosed`), on the
/// owner's thread. Do not call `receive` from inside a callback.
public protocol SMTPServerSessionDelegate: AnyObject {
    /// Policy decision for a phase. Return `.pending` to answer asynchronously.
    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision
    /// A run of unstuffed body bytes. The pointer is valid only during the call
    /// (it points into the caller's receive buffer or the session's own buffer).
    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer)
    /// The current transaction was discarded (RSET, EHLO, refused or oversized
    /// body, connection closed): drop what was received of its body.
    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession)
}

extension SMTPServerSessionDelegate {
    public func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision { .accept }
    public func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {}
    public func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) {}
}

/// What the owner must do after a call into the session.
public struct SMTPServerActions: Sendable, Hashable {
    /// `output` holds bytes to write (once per input batch).
    public var shouldFlush: Bool
    /// After writing the output, close the connection.
    public var shouldClose: Bool
    /// After writing the output, run the TLS handshake (STARTTLS accepted);
    /// the session is back in the post-greeting state and discarded any pipelined input.
    public var shouldStartTLS: Bool
}
