/// The numbers a delivery queue is run by: the effective `<domain>` settings for
/// its domain and VMTA, in nanoseconds and counts. Built from the config model
/// once per (re)load; the scheduler never looks at config text.
public struct QueuePolicy: Sendable, Equatable {
    public var maxSmtpOut: Int = 20
    /// 0 = unlimited.
    public var maxMessagesPerConnection: Int = 0
    public var maxMessageRate: Rate = .unlimited
    public var maxConnectRate: Rate = .unlimited
    public var maxRecipientsPerTransaction: Int = 1000
    /// retry-after list; the last value repeats.
    public var retryAfter: [UInt64] = [600_000_000_000]
    public var bounceAfter: UInt64 = (4 * 24 + 12) * 3_600_000_000_000
    public var queuePriority: Int = 50

    public var backoffMaxSmtpOut: Int? = nil
    public var backoffMaxMessageRate: Rate? = nil
    public var backoffMaxConnectRate: Rate? = nil
    public var backoffRetryAfter: UInt64 = 3_600_000_000_000
    /// nil = never (only by hand or by a delivery, see below).
    public var backoffToNormalAfter: UInt64? = nil
    public var backoffToNormalAfterDelivery: Bool = false

    public var connectTimeout: UInt64 = 120_000_000_000
    public var greetingTimeout: UInt64 = 300_000_000_000
    public var dataSendTimeout: UInt64 = 180_000_000_000
    /// How long an idle connection is kept for more work before QUIT.
    public var idleTimeout: UInt64 = 5_000_000_000
    public var bounceUponNoMX: Bool = true
    public var smtp421MeansMXUnavailable: Bool = false

    public init() {}

    /// The retry delay after `attempts` failed attempts (1-based), in normal mode.
    public func retryDelay(afterAttempt attempts: Int) -> UInt64 {
        guard !retryAfter.isEmpty else { return 600_000_000_000 }
        return retryAfter[min(max(attempts, 1), retryAfter.count) - 1]
    }

    public func effectiveMaxSmtpOut(backoff: Bool) -> Int {
        backoff ? (backoffMaxSmtpOut ?? maxSmtpOut) : maxSmtpOut
    }

    public func effectiveMessageRate(backoff: Bool) -> Rate {
        backoff ? (backoffMaxMessageRate ?? maxMessageRate) : maxMessageRate
    }

    public func effectiveConnectRate(backoff: Bool) -> Rate {
        backoff ? (backoffMaxConnectRate ?? maxConnectRate) : maxConnectRate
    }
}
