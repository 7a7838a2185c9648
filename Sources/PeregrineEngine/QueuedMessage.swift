import PeregrineSpool

/// A message as the scheduler holds it while any recipient is still pending:
/// envelope and scheduling state only. The body stays in the spool and is
/// read back from its spool stream by id when a delivery attempt is due.
public final class QueuedMessage {
    public struct Recipient: Sendable, Equatable {
        public var address: String
        /// ORCPT as "addr-type;address", xtext-decoded (RFC 3461 §4.2).
        public var orcpt: String?
        /// NOTIFY (empty: not given, which means FAILURE,DELAY; RFC 3461 §4.1).
        public var notify: NotifyFlags
        public init(address: String, orcpt: String? = nil, notify: NotifyFlags = []) {
            self.address = address; self.orcpt = orcpt; self.notify = notify
        }
        /// The domain part, lowercased (the queue it belongs to).
        public var domain: String {
            guard let at = address.lastIndex(of: "@") else { return "" }
            return address[address.index(after: at)...].lowercased()
        }
    }

    public let id: MessageID
    public let sender: String
    public let recipients: [Recipient]
    public private(set) var states: [RecipientState]
    public private(set) var pendingCount: Int
    public let vmta: String
    public let jobId: String?
    public let envId: String?
    /// RET of MAIL FROM: what a bounce message returns.
    public let ret: DSNReturn
    /// Wall-clock seconds since 1970 (accounting's timeQueued).
    public let receivedAtWall: Int64
    /// Monotonic nanoseconds (expiry).
    public let receivedAt: UInt64
    public let bodySize: Int
    /// Size of the message's whole spool record: the buffer a body read needs.
    public let recordLength: Int
    /// The spool stream (loop) whose segments hold the body.
    public let stream: Int
    /// Wall-clock seconds of the first delivery attempt (accounting), 0 = none yet.
    public var firstAttemptWall: Int64 = 0
    /// The `<virtual-mta-pool>` that picked `vmta` at injection (nil: named
    /// directly, or recovered from the spool, which does not keep it). Only
    /// such mail moves to another member when a source IP is disabled.
    public var pool: String?

    public init(id: MessageID, sender: String, recipients: [Recipient], vmta: String, jobId: String?,
                envId: String?, ret: DSNReturn = .unspecified, receivedAtWall: Int64, receivedAt: UInt64, bodySize: Int,
                recordLength: Int? = nil, stream: Int, states: [RecipientState]? = nil) {
        self.id = id
        self.sender = sender
        self.recipients = recipients
        self.vmta = vmta
        self.jobId = jobId
        self.envId = envId
        self.ret = ret
        self.receivedAtWall = receivedAtWall
        self.receivedAt = receivedAt
        self.bodySize = bodySize
        self.recordLength = recordLength ?? bodySize
        self.stream = stream
        let s = states ?? Array(repeating: .pending, count: recipients.count)
        self.states = s
        self.pendingCount = s.reduce(0) { $0 + ($1 == .pending ? 1 : 0) }
    }

    /// Records a final state; returns false if the recipient was already final
    /// (a duplicate report after a crash-recovery replay, for instance).
    @discardableResult
    public func finish(recipient index: Int, as state: RecipientState) -> Bool {
        guard index >= 0, index < states.count, states[index] == .pending, state != .pending else { return false }
        states[index] = state
        pendingCount -= 1
        return true
    }

    public var isComplete: Bool { pendingCount == 0 }
}

/// One transaction's worth of work: a message and its recipients in one queue
/// (at most max-rcpt-per-transaction of them).
public struct DeliveryItem {
    public let message: QueuedMessage
    public var recipients: [Int]
    /// Failed attempts so far (selects the retry-after step).
    public var attempts: Int
    public init(message: QueuedMessage, recipients: [Int], attempts: Int = 0) {
        self.message = message; self.recipients = recipients; self.attempts = attempts
    }
}
