/// The phase a client session waits in; each has its own timeout (RFC 5321 §4.5.3.2).
public enum SMTPClientPhase: String, Sendable, Hashable {
    case greeting, ehlo, helo, mail, rcpt, dataInit, dataBlock, dataEnd, rset, quit
    /// The reply to STARTTLS, then the owner's TLS handshake.
    case startTLS

    /// What the session waits for in this phase, for failure texts
    /// ("timeout waiting for the greeting").
    public var awaited: String {
        switch self {
        case .greeting: "the greeting"
        case .ehlo: "the EHLO reply"
        case .helo: "the HELO reply"
        case .mail: "the MAIL FROM reply"
        case .rcpt: "the RCPT TO reply"
        case .dataInit: "the DATA reply"
        case .dataBlock: "the message body to be sent"
        case .dataEnd: "the reply to the end of data"
        case .rset: "the RSET reply"
        case .quit: "the QUIT reply"
        case .startTLS: "the STARTTLS reply and TLS handshake"
        }
    }
}

/// Per-phase timeouts in nanoseconds. Defaults are RFC 5321 §4.5.3.2's.
public struct SMTPClientTimeouts: Sendable, Hashable {
    static let minute: UInt64 = 60_000_000_000
    public var greeting: UInt64 = 5 * minute
    public var ehlo: UInt64 = 5 * minute
    public var mail: UInt64 = 5 * minute
    public var rcpt: UInt64 = 5 * minute
    public var dataInit: UInt64 = 2 * minute
    public var dataBlock: UInt64 = 3 * minute
    public var dataEnd: UInt64 = 10 * minute
    public var rset: UInt64 = 5 * minute
    public var quit: UInt64 = 2 * minute
    /// STARTTLS reply plus the TLS handshake.
    public var startTLS: UInt64 = 2 * minute
    public init() {}

    public func timeout(for phase: SMTPClientPhase) -> UInt64 {
        switch phase {
        case .greeting: greeting
        case .ehlo, .helo: ehlo
        case .mail: mail
        case .rcpt: rcpt
        case .dataInit: dataInit
        case .dataBlock: dataBlock
        case .dataEnd: dataEnd
        case .rset: rset
        case .quit: quit
        case .startTLS: startTLS
        }
    }
}

public struct SMTPClientConfiguration: Sendable {
    /// The name sent in EHLO/HELO (a VMTA's smtp-source-host name).
    public var heloName: String
    /// Pipeline MAIL/RCPT/DATA when the server offers PIPELINING.
    public var usePipelining: Bool = true
    public var timeouts = SMTPClientTimeouts()
    public init(heloName: String) { self.heloName = heloName }
}

/// The service extensions a server announced in its EHLO reply.
public struct SMTPExtensions: Sendable, Hashable {
    public var pipelining = false
    /// SIZE: nil when not offered; 0 when offered without a limit.
    public var size: Int?
    public var eightBitMIME = false
    public var startTLS = false
    public var enhancedStatusCodes = false
    public var dsn = false
    public var smtpUTF8 = false
    public var chunking = false
    public var authMechanisms: [String] = []
    /// True when the session had to fall back to HELO.
    public var isESMTP = false
    public init() {}

    /// Parses the keyword lines of an EHLO reply (its first line is the server's name).
    public init(ehloReply: SMTPReply) {
        isESMTP = true
        for line in ehloReply.lines.dropFirst() {
            let words = line.split(separator: " ")
            guard let first = words.first else { continue }
            switch first.uppercased() {
            case "PIPELINING": pipelining = true
            case "SIZE": size = words.count > 1 ? Int(words[1]) ?? 0 : 0
            case "8BITMIME": eightBitMIME = true
            case "STARTTLS": startTLS = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            case "DSN": dsn = true
            case "SMTPUTF8": smtputf8Offered()
            case "CHUNKING": chunking = true
            case "AUTH": authMechanisms = words.dropFirst().map { $0.uppercased() }
            default: break
            }
        }
    }

    private mutating func smtputf8Offered() { smtpUTF8 = true }
}

/// One message to deliver: the envelope. The body follows on `.sendBody`.
public struct SMTPClientEnvelope: Sendable, Hashable {
    /// Reverse path; "" for the null sender.
    public var mailFrom: String
    public var recipients: [String]
    /// Body size for SIZE= (sent when the server offers SIZE).
    public var size: Int?
    /// BODY= (8BITMIME is sent only when offered).
    public var bodyType: SMTPBodyType?
    /// ENVID and RET (sent only when DSN is offered).
    public var envelopeID: String?
    public var ret: SMTPDSNReturn?

    public init(mailFrom: String, recipients: [String], size: Int? = nil, bodyType: SMTPBodyType? = nil,
                envelopeID: String? = nil, ret: SMTPDSNReturn? = nil) {
        self.mailFrom = mailFrom; self.recipients = recipients; self.size = size
        self.bodyType = bodyType; self.envelopeID = envelopeID; self.ret = ret
    }
}

/// The outcome for one recipient.
public struct SMTPRecipientResult: Sendable, Hashable {
    public enum Status: Sendable, Hashable { case delivered, transientFailure, permanentFailure }
    public var address: String
    public var status: Status
    /// The reply that decided it: the final reply after DATA when delivered; otherwise the
    /// first failing reply that applies (MAIL, this RCPT, DATA, end of data, 421), or a
    /// synthetic 451 4.4.2 when the connection ended or timed out before any answer.
    public var reply: SMTPReply
    /// The synthetic case: no reply from the server decided it.
    public var isLocal: Bool
}

/// The outcome of one message.
public struct SMTPMessageResult: Sendable, Hashable {
    public var envelope: SMTPClientEnvelope
    public var mailReply: SMTPReply?
    /// One per recipient, nil when never answered.
    public var rcptReplies: [SMTPReply?]
    /// The reply to DATA (354 or a refusal).
    public var dataReply: SMTPReply?
    /// The reply after the body's final dot.
    public var finalReply: SMTPReply?
    public var recipients: [SMTPRecipientResult]
    public var deliveredCount: Int { recipients.reduce(0) { $0 + ($1.status == .delivered ? 1 : 0) } }
}

/// Why a client session ended. After `.closed`, write any output and close the socket.
public enum SMTPClientCloseReason: Sendable, Hashable {
    /// After our QUIT (the reply, nil if the peer closed instead).
    case quit(SMTPReply?)
    /// The greeting was not 2xx (421/554 at connect).
    case greetingRefused(SMTPReply)
    /// EHLO and HELO were refused.
    case heloRefused(SMTPReply)
    /// A 421 at any point.
    case serviceClosing(SMTPReply)
    /// The owner's timer for this phase fired.
    case timedOut(SMTPClientPhase)
    /// The connection dropped.
    case connectionLost
    /// The peer sent something that is not SMTP.
    case protocolError(String)

    /// True for outcomes that should defer (not bounce) what was not delivered.
    public var isTransient: Bool {
        switch self {
        case .greetingRefused(let r), .heloRefused(let r): return !r.isPermanentFailure
        default: return true
        }
    }
}

/// What a client session tells its owner.
public enum SMTPClientEvent: Sendable, Hashable {
    /// Arm (or re-arm) the one session timer for this phase.
    case setTimer(SMTPClientPhase, nanoseconds: UInt64)
    /// No reply is awaited: cancel the timer.
    case cancelTimer
    /// Ready for `send(_:)` (after EHLO/HELO and after each message).
    case ready(SMTPExtensions)
    /// The server said 354: stream the body with `appendBody` and `finishBody`.
    case sendBody
    /// The server answered our STARTTLS (`startTLS()`). 220: run the TLS
    /// handshake now (the session's timer covers it), then call
    /// `tlsEstablished()` or `tlsFailed(_:)`; bytes received meanwhile are
    /// TLS, not for `receive`. Any other reply: the session stays in plain
    /// text and `.ready` follows.
    case startTLS(SMTPReply)
    case messageCompleted(SMTPMessageResult)
    case closed(SMTPClientCloseReason)
}
