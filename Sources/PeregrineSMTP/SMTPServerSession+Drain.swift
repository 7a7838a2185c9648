/// Draining for the owner's shutdown (RFC 5321 §3.8: a server that must stop
/// answers 421 rather than dropping the connection, so the client knows to
/// retry rather than wonder whether its command took effect).
extension SMTPServerSession {
    /// The owner is shutting down: from now on the next command line gets
    /// `reply` (a 421) and the session closes. A DATA body in progress goes on
    /// to its end-of-data decision (the owner answers it, typically with the
    /// same 421), and a decision already pending is answered first; the
    /// command after it gets `reply`. A client that sends nothing gets it at
    /// the owner's drain deadline (`drainDeadlinePassed()`).
    public func beginDrain(_ reply: SMTPReply) {
        guard phase != .closed, drainReply == nil else { return }
        drainReply = reply
    }

    /// True once `beginDrain(_:)` was called.
    public var isDraining: Bool { drainReply != nil }

    /// The owner's drain deadline passed: unless a decision is pending (the
    /// owner answers it first, then calls again), the drain reply is sent now,
    /// even in the middle of a DATA body, and the session closes.
    @discardableResult
    public func drainDeadlinePassed() -> SMTPServerActions {
        guard phase != .closed, awaiting == nil, let reply = drainReply else { return actions() }
        answerDrain(reply)
        return actions()
    }

    func answerDrain(_ reply: SMTPReply) {
        write(reply)
        connectionClosed()
    }
}
