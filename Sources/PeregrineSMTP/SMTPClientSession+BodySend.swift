/// `data-send-timeout` covers sending the body, `smtp-data-termination-timeout`
/// the wait for the reply after it. The session writes the whole body (and
/// its end marker) at once, so only the owner knows when the socket has
/// taken it: against a receiver that stops reading, the send stalls, and
/// without these calls the stall would be timed by the (much longer)
/// data-termination timeout.
extension SMTPClientSession {
    /// Call right after the body's end was written (`finishBody()`, or
    /// `writeBody(…, last: true, …)`) when those bytes are not on the socket
    /// yet: the session times the send with the data-block timeout
    /// (a `.setTimer(.dataBlock, …)` event), and a timeout now reports
    /// "timeout waiting for the message body to be sent".
    public func bodyAwaitsSocket() {
        guard state == .dataEnd, !bodyUnsent else { return }
        bodyUnsent = true
        wait(.dataBlock)
    }

    /// True between `bodyAwaitsSocket()` and `bodyHandedToSocket()` (or the
    /// reply / close that ends the wait).
    public var isBodyAwaitingSocket: Bool { bodyUnsent }

    /// The socket took the body's last byte: the wait for the final reply
    /// starts (a `.setTimer(.dataEnd, …)` event).
    public func bodyHandedToSocket() {
        guard bodyUnsent else { return }
        bodyUnsent = false
        if state == .dataEnd { wait(.dataEnd) }
    }
}
