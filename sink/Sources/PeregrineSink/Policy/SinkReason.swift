/// Why the sink refused something; the keys of the counters in `/stats`.
public enum SinkReason: Int, CaseIterable, Sendable {
    case maxConnections
    case maxMessagesPerConnection
    case messageRate
    case penaltyBox
    case unknownUser
    case mailboxFull
    case inactive
    case mailboxRate
    case greylisted
    case randomFailure
    case scripted
    case droppedDuringData
    case tlsRequired
    case connectionRate
    case domainRate
    case tooManyRecipients
    /// A penalty box that turned permanent (`escalate`).
    case escalated
    /// `require-dkim`: no DKIM signature verified.
    case unauthenticated
    /// `require-dmarc-alignment`: no verified signature aligned with the From domain.
    case dmarcAlignment
    /// `require-list-unsubscribe`: no RFC 8058 one-click unsubscribe.
    case listUnsubscribe
    /// `warm-up`: a new sending IP over its allowance for the current period.
    case warmUp

    public var name: String {
        switch self {
        case .maxConnections: return "max-connections"
        case .maxMessagesPerConnection: return "max-msg-per-connection"
        case .messageRate: return "max-msg-rate"
        case .penaltyBox: return "penalty-box"
        case .unknownUser: return "unknown-user"
        case .mailboxFull: return "mailbox-full"
        case .inactive: return "inactive"
        case .mailboxRate: return "mailbox-rate"
        case .greylisted: return "greylist"
        case .randomFailure: return "random-failure"
        case .scripted: return "scripted"
        case .droppedDuringData: return "dropped-during-data"
        case .tlsRequired: return "require-tls"
        case .connectionRate: return "max-connection-rate"
        case .domainRate: return "max-domain-msg-rate"
        case .tooManyRecipients: return "max-rcpt-per-msg"
        case .escalated: return "escalated"
        case .unauthenticated: return "require-dkim"
        case .dmarcAlignment: return "require-dmarc-alignment"
        case .listUnsubscribe: return "require-list-unsubscribe"
        case .warmUp: return "warm-up"
        }
    }

    init(_ kind: SinkRecipientKind) {
        switch kind {
        case .unknownUser: self = .unknownUser
        case .mailboxFull: self = .mailboxFull
        case .inactive: self = .inactive
        }
    }
}

/// Counts per reason, in a fixed array (no dictionary per event).
public struct SinkReasonCounts: Sendable, Equatable {
    public private(set) var counts = [UInt64](repeating: 0, count: SinkReason.allCases.count)
    public init() {}
    public subscript(reason: SinkReason) -> UInt64 { counts[reason.rawValue] }
    mutating func add(_ reason: SinkReason) { counts[reason.rawValue] &+= 1 }
    public var total: UInt64 { counts.reduce(0, &+) }
    mutating func merge(_ other: SinkReasonCounts) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
    }
    /// Non-zero entries by name, for JSON.
    public var byName: [String: UInt64] {
        var out: [String: UInt64] = [:]
        for r in SinkReason.allCases where counts[r.rawValue] > 0 { out[r.name] = counts[r.rawValue] }
        return out
    }
}

/// What the sink saw from one sending IP at one provider (or a provider in total).
public struct SinkCounters: Sendable, Equatable {
    public var sessions: UInt64 = 0
    /// Sessions that completed a TLS handshake (STARTTLS).
    public var sessionsTLS: UInt64 = 0
    /// STARTTLS handshakes that failed (or were broken on purpose, `starttls break`).
    public var tlsHandshakeFailures: UInt64 = 0
    public var sessionsRefused = SinkReasonCounts()
    /// Connections the sink closed for idling (`idle-timeout`).
    public var sessionsTimedOut: UInt64 = 0
    public var messagesAccepted: UInt64 = 0
    public var messagesDeferred = SinkReasonCounts()
    public var messagesRejected = SinkReasonCounts()
    public var messagesDropped: UInt64 = 0
    public var recipientsAccepted: UInt64 = 0
    public var recipientsDeferred = SinkReasonCounts()
    public var recipientsRejected = SinkReasonCounts()
    public var bytesAccepted: UInt64 = 0
    public var peakConcurrentConnections: Int = 0
    public var maxMessagesOnOneConnection: Int = 0
    public init() {}

    mutating func merge(_ o: SinkCounters) {
        sessions &+= o.sessions
        sessionsTLS &+= o.sessionsTLS
        tlsHandshakeFailures &+= o.tlsHandshakeFailures
        sessionsRefused.merge(o.sessionsRefused)
        sessionsTimedOut &+= o.sessionsTimedOut
        messagesAccepted &+= o.messagesAccepted
        messagesDeferred.merge(o.messagesDeferred)
        messagesRejected.merge(o.messagesRejected)
        messagesDropped &+= o.messagesDropped
        recipientsAccepted &+= o.recipientsAccepted
        recipientsDeferred.merge(o.recipientsDeferred)
        recipientsRejected.merge(o.recipientsRejected)
        bytesAccepted &+= o.bytesAccepted
        maxMessagesOnOneConnection = max(maxMessagesOnOneConnection, o.maxMessagesOnOneConnection)
    }

    /// A JSON-ready dictionary.
    public var jsonObject: [String: Any] {
        [
            "sessions": sessions,
            "sessions_tls": sessionsTLS,
            "tls_handshake_failures": tlsHandshakeFailures,
            "sessions_refused": sessionsRefused.byName,
            "sessions_timed_out": sessionsTimedOut,
            "messages_accepted": messagesAccepted,
            "messages_deferred": messagesDeferred.byName,
            "messages_rejected": messagesRejected.byName,
            "messages_dropped": messagesDropped,
            "recipients_accepted": recipientsAccepted,
            "recipients_deferred": recipientsDeferred.byName,
            "recipients_rejected": recipientsRejected.byName,
            "bytes_accepted": bytesAccepted,
            "peak_concurrent_connections": peakConcurrentConnections,
            "max_messages_on_one_connection": maxMessagesOnOneConnection,
        ]
    }
}
