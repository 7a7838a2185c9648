import PeregrineConfig

/// The effective delivery settings of one queue (`domain/vmta`), with
/// PowerMTA's names and defaults. Obtain them from
/// `PeregrineConfig.settings(forDomain:vmta:)`, which layers the `<domain>`
/// blocks that apply over these defaults.
public struct DomainSettings: Hashable, Sendable {
    /// `max-smtp-out`: concurrent connections for the queue.
    public var maxSMTPOut = 20
    /// `max-msg-per-connection`: 0 = unlimited.
    public var maxMsgPerConnection = 0
    /// `max-msg-rate`, honoured across all of the queue's connections.
    public var maxMsgRate: Rate = .unlimited
    /// `max-connect-rate`: new connections per interval.
    public var maxConnectRate: Rate = .unlimited
    /// `cluster-max-smtp-out`: connections to this domain from every node of
    /// the cluster together (leases in Redis, CLUSTER.md); nil = no cluster cap.
    public var clusterMaxSMTPOut: Int?
    /// `cluster-max-msg-rate`: messages to this domain from every node together
    /// (a GCRA in Redis, tokens taken in batches); unlimited = no cluster cap.
    public var clusterMaxMsgRate: Rate = .unlimited
    /// `max-rcpt-per-transaction`.
    public var maxRcptPerTransaction = 1000
    /// `max-cold-virtual-mta-msg N/d`: the first N messages a day for this
    /// domain from VMTA `foo` go through `foo-cold` instead, when that VMTA
    /// exists (an IP being warmed up). 0: none.
    public var maxColdVirtualMTAMsg = 0
    /// `retry-after`: delays after each transient failure (the last repeats).
    public var retryAfter = RetrySchedule([.seconds(600)])
    /// `bounce-after`: a recipient still undelivered this long after queueing bounces (message-expired).
    public var bounceAfter: Duration = .seconds(4 * 86400 + 12 * 3600)
    /// `route`: bypass MX lookup; `[host]` connects to the host itself, `host` uses its MX.
    public var route: HostPort?
    /// `smtp-hosts`: the hosts to deliver to instead of the domain's MX, in
    /// order; `[host]` is connected to itself, a bare `host` is looked up by
    /// MX (A fallback); a port replaces 25. Empty: not set.
    public var smtpHosts: [HostPort] = []
    /// `queue-to DOMAIN`: this domain's recipients wait in (and are delivered
    /// with the settings and routing of) DOMAIN's queue; the addresses are unchanged.
    public var queueTo: String?
    /// `max-msg-rate 0`: deliver nothing (the queue holds its mail until
    /// bounce-after or until the rate is raised by a reload).
    public var maxMsgRateIsZero = false
    /// `backoff-max-msg-rate 0`: deliver nothing while in backoff; nil = as `maxMsgRateIsZero`
    /// unless `backoffMaxMsgRate` sets a rate.
    public var backoffMaxMsgRateIsZero: Bool?
    /// `use-starttls`: try STARTTLS when offered.
    public var useStartTLS = true
    /// `require-starttls`: do not deliver without TLS.
    public var requireStartTLS = false
    /// `tls-verify-hostname`: verify the MX's certificate against its name (system CAs); off like most MTAs.
    public var tlsVerifyHostname = false
    /// `smtp-pattern-list`: the name of an `<smtp-pattern-list>` (checked to exist at load).
    public var smtpPatternList: String?
    /// `backoff-max-msg-rate`; nil = same as `maxMsgRate`.
    public var backoffMaxMsgRate: Rate?
    /// `backoff-max-smtp-out`; nil = same as `maxSMTPOut`.
    public var backoffMaxSMTPOut: Int?
    /// `backoff-max-connect-rate`; nil = same as `maxConnectRate`.
    public var backoffMaxConnectRate: Rate?
    /// `backoff-retry-after`: the retry schedule while in backoff mode.
    public var backoffRetryAfter = RetrySchedule([.seconds(1200)])
    /// `backoff-to-normal-after`: leave backoff mode after this long; nil = never (only by hand).
    public var backoffToNormalAfter: Duration? = .seconds(3600)
    /// `backoff-to-normal-after-delivery`: leave backoff mode on the first delivery.
    public var backoffToNormalAfterDelivery = false
    /// `queue-priority` 0...100: higher is served first when connections are
    /// scarce (total-max-smtp-out, a VMTA's max-smtp-out: ConnectionBudget.swift).
    public var queuePriority = 50
    /// `allow-priority-interruption`: whether a waiting higher-priority queue
    /// may ask this queue's connections to quit after their transaction.
    public var allowPriorityInterruption = true
    /// `smtp-553-means-invalid-mailbox` (PowerMTA's default yes): a 553 reply
    /// to RCPT without an enhanced code counts as 5.1.1, bad-mailbox.
    public var smtp553MeansInvalidMailbox = true
    /// `connect-timeout`.
    public var connectTimeout: Duration = .seconds(120)
    /// `smtp-greeting-timeout`.
    public var smtpGreetingTimeout: Duration = .seconds(300)
    /// `data-send-timeout`: sending the message body.
    public var dataSendTimeout: Duration = .seconds(180)
    /// `smtp-data-termination-timeout`: the reply to the final "." (too short causes duplicates).
    public var smtpDataTerminationTimeout: Duration = .seconds(600)
    // The reply timeouts of the other phases (RFC 5321 §4.5.3.2 defaults).
    // PowerMTA does not publish names for them; these follow its
    // `smtp-…-timeout` pattern.
    /// `smtp-ehlo-timeout`: the reply to EHLO (and HELO).
    public var smtpEHLOTimeout: Duration = .seconds(300)
    /// `smtp-mail-from-timeout`: the reply to MAIL FROM.
    public var smtpMailFromTimeout: Duration = .seconds(300)
    /// `smtp-rcpt-to-timeout`: each reply to RCPT TO.
    public var smtpRcptToTimeout: Duration = .seconds(300)
    /// `smtp-data-timeout`: the reply to DATA (the 354).
    public var smtpDataTimeout: Duration = .seconds(120)
    /// `smtp-rset-timeout`: the reply to RSET.
    public var smtpRsetTimeout: Duration = .seconds(300)
    /// `smtp-quit-timeout`: the reply to QUIT.
    public var smtpQuitTimeout: Duration = .seconds(120)
    /// `smtp-starttls-timeout`: the reply to STARTTLS plus the TLS handshake.
    public var smtpStartTLSTimeout: Duration = .seconds(120)
    /// `bounce-upon-no-mx`: bounce when the domain has no MX instead of falling back to its A record.
    public var bounceUponNoMX = false
    /// `bounce-upon-5xx-greeting`: a 5xx greeting bounces the queue's waiting
    /// mail instead of counting as a failed host (next MX, then retry).
    public var bounceUpon5xxGreeting = false
    /// `smtp-421-means-mx-unavailable`: a 421 greeting moves on to the next MX.
    public var smtp421MeansMXUnavailable = false
    /// `mx-rollup`: queues of this VMTA whose resolved MX host set is the same
    /// share one site (one connection budget, one set of rate limiters).
    /// Off by default: PowerMTA configs expect per-domain limits, a rolled-up
    /// queue is sharded by VMTA (all of a VMTA's rolled-up domains on one loop),
    /// and rolling up unrelated domains that happen to share a hosting MX would
    /// tighten their limits unasked. Operators turn it on for hosted families
    /// (Outlook's hotmail/outlook/live/msn) whose receiver counts per IP.
    public var mxRollup = false
    /// `deliver-local-dsn`: send bounce (and success) reports to the sender
    /// when this queue's recipients bounce; ESPs often turn it off and read
    /// the accounting file instead. The `b` record is written either way.
    public var deliverLocalDSN = true
    /// `notify-of-delay-every` (PowerMTA's name): a recipient still deferred
    /// this long after queueing gets one delay report (RFC 3464 `Action:
    /// delayed`) when its NOTIFY allows DELAY; nil (`never`) sends none.
    /// PowerMTA's default, 4 h.
    public var notifyOfDelayEvery: Duration? = .seconds(4 * 3600)

    public init() {}

    /// Connection cap in the given mode.
    public func maxSMTPOut(inBackoff backoff: Bool) -> Int {
        backoff ? (backoffMaxSMTPOut ?? maxSMTPOut) : maxSMTPOut
    }

    /// Message rate in the given mode.
    public func maxMsgRate(inBackoff backoff: Bool) -> Rate {
        backoff ? (backoffMaxMsgRate ?? maxMsgRate) : maxMsgRate
    }

    /// Whether the message rate in the given mode is 0: nothing is delivered.
    public func holdsDelivery(inBackoff backoff: Bool) -> Bool {
        guard backoff else { return maxMsgRateIsZero }
        if let zero = backoffMaxMsgRateIsZero { return zero }
        return backoffMaxMsgRate == nil ? maxMsgRateIsZero : false
    }

    /// Connect rate in the given mode.
    public func maxConnectRate(inBackoff backoff: Bool) -> Rate {
        backoff ? (backoffMaxConnectRate ?? maxConnectRate) : maxConnectRate
    }

    /// Retry schedule in the given mode.
    public func retryAfter(inBackoff backoff: Bool) -> RetrySchedule {
        backoff ? backoffRetryAfter : retryAfter
    }
}
