import Foundation
import PeregrineConfig

/// The phase of an SMTP session at which a receiver gives a reply. Real
/// providers answer connection limits at the greeting, reputation deferrals at
/// MAIL FROM and per-recipient limits at RCPT TO (see DOMAIN.md).
public enum SinkPhase: String, CaseIterable, Sendable {
    case greeting
    case helo
    case mail
    case rcpt
    /// The reply to the end of DATA (the final dot).
    case data
}

/// A reply a profile gives, as written in the profile: code, optional enhanced
/// code, text lines that may contain placeholders (`{ip}`, `{rcpt}`, `{local}`,
/// `{domain}`, `{sender}`, `{host}`).
public struct SinkReplyTemplate: Hashable, Sendable {
    public var code: Int
    public var enhanced: String?
    public var lines: [String]
    /// Set when the text ends with a `code-` continuation (Gmail style): a last
    /// line with the provider's `reply-suffix` is added when rendering.
    public var continued: Bool
    /// Close the connection after this reply (always for 421).
    public var close: Bool
    /// No reply at all: the connection is closed where the reply would be
    /// (Yahoo at its per-connection cap). Written `close` in a profile.
    public var silent: Bool

    public init(code: Int, enhanced: String? = nil, lines: [String], continued: Bool = false, close: Bool? = nil,
                silent: Bool = false) {
        self.code = code
        self.enhanced = enhanced
        self.lines = lines.isEmpty ? [""] : lines
        self.continued = continued
        self.close = silent || (close ?? (code == 421))
        self.silent = silent
    }

    /// `close` in a profile where a reply would go: the connection just closes.
    public static let silentClose = SinkReplyTemplate(code: 421, lines: ["(closed without a reply)"], silent: true)

    /// Parses `421-4.7.0 Try again later, closing connection.`; several lines
    /// may be separated by `\n` (the two characters or a real newline):
    /// `421-gmx.net (mxgmx114) Nemesis ESMTP Service not available\n421 Reject due to policy restrictions.`
    /// Returns nil with a reason on malformed text.
    public static func parse(_ text: String) -> Result<SinkReplyTemplate, SinkProfileError> {
        let normalized = text.replacingOccurrences(of: "\\n", with: "\n")
        var code: Int? = nil
        var enhanced: String? = nil
        var lines: [String] = []
        var lastSeparator: Character = " "
        for raw in normalized.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = Substring(raw.trimmingTrailingWhitespace())
            let digits = line.prefix(3)
            guard digits.count == 3, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(digits), (200...599).contains(value) else {
                return .failure(SinkProfileError("reply \"\(text)\" must start with a 3-digit code 200-599"))
            }
            if let c = code, c != value {
                return .failure(SinkProfileError("reply \"\(text)\" mixes codes \(c) and \(value)"))
            }
            code = value
            var rest = line.dropFirst(3)
            lastSeparator = " "
            if let sep = rest.first {
                guard sep == " " || sep == "-" else {
                    return .failure(SinkProfileError("reply \"\(text)\": expected ' ' or '-' after the code"))
                }
                lastSeparator = sep
                rest = rest.dropFirst()
            }
            // An enhanced code `x.y.z` whose class matches the reply's.
            let firstWord = rest.prefix(while: { $0 != " " })
            if isEnhancedCode(firstWord), let cls = firstWord.first, cls == String(value).first {
                if enhanced == nil { enhanced = String(firstWord) }
                rest = rest.dropFirst(firstWord.count)
                if rest.first == " " { rest = rest.dropFirst() }
            }
            lines.append(String(rest))
        }
        guard let value = code else {
            return .failure(SinkProfileError("empty reply text"))
        }
        return .success(SinkReplyTemplate(code: value, enhanced: enhanced, lines: lines,
                                          continued: lastSeparator == "-"))
    }

    static func isEnhancedCode(_ word: Substring) -> Bool {
        let parts = word.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return false }
        guard parts[0].count == 1, let c = parts[0].first, c == "2" || c == "4" || c == "5" else { return false }
        return parts[1...].allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }
}

extension Substring {
    func trimmingTrailingWhitespace() -> Substring {
        var s = self
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return s
    }
}

/// An error in a profile's meaning (the parser adds `file:line:`).
public struct SinkProfileError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A message rate: `count` per `seconds` (real time), with a burst.
public struct SinkRate: Hashable, Sendable {
    public var count: Int
    public var seconds: Double
    public var burst: Int
    public init(count: Int, seconds: Double, burst: Int? = nil) {
        self.count = max(1, count)
        self.seconds = seconds
        self.burst = max(1, burst ?? count)
    }
}

/// A delay distribution, in real seconds (the time scale applies).
public enum SinkLatency: Hashable, Sendable {
    case none
    case fixed(Double)
    case uniform(Double, Double)
    /// Exponential with this mean.
    case exponential(Double)
}

/// A limit per sending IP: its value, the phase it answers at, the reply, and
/// whether tripping it puts the IP in the penalty box.
public struct SinkLimit: Hashable, Sendable {
    public var value: Int
    public var phase: SinkPhase
    public var reply: SinkReplyTemplate
    public var penalty: Bool
    /// Counted per sending IP and MX host rather than per sending IP over the
    /// provider (Orange: "3 connections per MX").
    public var perMX: Bool
    public init(value: Int, phase: SinkPhase, reply: SinkReplyTemplate, penalty: Bool = false, perMX: Bool = false) {
        self.value = value; self.phase = phase; self.reply = reply; self.penalty = penalty; self.perMX = perMX
    }
}

public struct SinkRateLimit: Hashable, Sendable {
    public var rate: SinkRate
    public var phase: SinkPhase
    public var reply: SinkReplyTemplate
    public var penalty: Bool
    public init(rate: SinkRate, phase: SinkPhase, reply: SinkReplyTemplate, penalty: Bool = false) {
        self.rate = rate; self.phase = phase; self.reply = reply; self.penalty = penalty
    }
}

/// Once a limit marked `penalty` trips, the IP (or, for `max-domain-msg-rate`,
/// the envelope sender's domain) is deferred for `seconds` at `phase` with
/// `reply` — or, with `allow`, held to that rate (Outlook's "1 message/minute
/// for 90 minutes").
public struct SinkPenaltyBox: Hashable, Sendable {
    public var seconds: Double
    public var phase: SinkPhase
    public var reply: SinkReplyTemplate
    public var allow: SinkRate?
    /// `extend`: every attempt the box refuses starts its `seconds` again, so
    /// a sender that keeps retrying stays boxed.
    public var extendOnRetry: Bool
    /// `escalate N "REPLY"`: the N-th attempt refused inside one box turns it
    /// into a permanent refusal with REPLY for the rest of the run (Yahoo's
    /// `553 5.7.2 [TSS09] … permanently deferred`).
    public var escalateAfter: Int?
    public var escalateReply: SinkReplyTemplate?
    public init(seconds: Double, phase: SinkPhase, reply: SinkReplyTemplate, allow: SinkRate? = nil,
                extendOnRetry: Bool = false, escalateAfter: Int? = nil, escalateReply: SinkReplyTemplate? = nil) {
        self.seconds = seconds; self.phase = phase; self.reply = reply; self.allow = allow
        self.extendOnRetry = extendOnRetry; self.escalateAfter = escalateAfter; self.escalateReply = escalateReply
    }
}

/// A glob over recipient local parts: `*` any run, `?` one character; case-insensitive.
public struct SinkPattern: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    let bytes: [UInt8]
    public init(_ text: String) {
        self.text = text
        self.bytes = Array(text.lowercased().utf8)
    }
    public var description: String { text }

    public func matches(_ subject: some Collection<UInt8>) -> Bool {
        let s = Array(subject)
        var p = 0, i = 0
        var star = -1, mark = 0
        while i < s.count {
            let c = SinkPattern.lower(s[i])
            if p < bytes.count, bytes[p] == UInt8(ascii: "?") || bytes[p] == c {
                p += 1; i += 1
            } else if p < bytes.count, bytes[p] == UInt8(ascii: "*") {
                star = p; mark = i; p += 1
            } else if star >= 0 {
                p = star + 1; mark += 1; i = mark
            } else {
                return false
            }
        }
        while p < bytes.count, bytes[p] == UInt8(ascii: "*") { p += 1 }
        return p == bytes.count
    }

    @inline(__always) static func lower(_ c: UInt8) -> UInt8 {
        (c >= 65 && c <= 90) ? c + 32 : c
    }
}

/// What a recipient rule does.
public enum SinkRecipientKind: String, Hashable, Sendable, CaseIterable {
    case unknownUser = "unknown-user"
    case mailboxFull = "mailbox-full"
    case inactive = "inactive"
}

/// A recipient rule answers at RCPT, or (`phase` data, as Yahoo does with
/// its "dd" unknown-user reply) accepts the recipient and refuses the whole
/// message at the end of DATA.
public struct SinkRecipientRule: Hashable, Sendable {
    public var kind: SinkRecipientKind
    public var patterns: [SinkPattern]
    public var reply: SinkReplyTemplate
    public var phase: SinkPhase
    public init(kind: SinkRecipientKind, patterns: [SinkPattern], reply: SinkReplyTemplate, phase: SinkPhase = .rcpt) {
        self.kind = kind; self.patterns = patterns; self.reply = reply; self.phase = phase
    }
}

/// A rate per recipient mailbox (Gmail's 450-4.2.1), for recipients matching `patterns`.
public struct SinkMailboxRate: Hashable, Sendable {
    public var rate: SinkRate
    public var patterns: [SinkPattern]
    public var reply: SinkReplyTemplate
    public init(rate: SinkRate, patterns: [SinkPattern], reply: SinkReplyTemplate) {
        self.rate = rate; self.patterns = patterns; self.reply = reply
    }
}

/// Greylisting of (sender, recipient, IP) triples for recipients matching `patterns`.
public struct SinkGreylist: Hashable, Sendable {
    public var seconds: Double
    public var patterns: [SinkPattern]
    public var reply: SinkReplyTemplate
    public init(seconds: Double, patterns: [SinkPattern], reply: SinkReplyTemplate) {
        self.seconds = seconds; self.patterns = patterns; self.reply = reply
    }
}

/// A random transient failure at a phase.
public struct SinkRandomFailure: Hashable, Sendable {
    public var probability: Double
    public var phase: SinkPhase
    public var reply: SinkReplyTemplate
    public init(probability: Double, phase: SinkPhase, reply: SinkReplyTemplate) {
        self.probability = probability; self.phase = phase; self.reply = reply
    }
}

/// How a provider answers STARTTLS (only when the sink runs with `--tls-cert`/`--tls-key`).
public enum SinkStartTLSMode: String, Hashable, Sendable, CaseIterable {
    /// Advertised and accepted: a real TLS handshake.
    case offer
    /// Advertised, answered `454 4.7.0 TLS not available due to temporary reason`.
    case refuse
    /// Advertised and accepted with 220, then the handshake is answered with
    /// bytes that are not TLS (a broken middlebox): the client's handshake fails.
    case `break`
}

/// Gmail's answer to a sender without TLS (DOMAIN.md).
public let sinkGmailRequireTLSReply = SinkReplyTemplate(
    code: 421, enhanced: "4.7.29", lines: ["Your email has been rate limited because you're not using a TLS connection."],
    continued: true)

/// One simulated provider.
public struct SinkISPProfile: Hashable, Sendable {
    public var name: String
    /// Domains it serves (for DNS); `*` alone means any domain.
    public var domains: [String] = []
    /// Numeric addresses its MX hosts listen on.
    public var mx: [String] = []
    public var port: UInt16 = 25
    /// The name in the banner (after `220`) and in the EHLO reply.
    public var hostname: String
    /// Text added at the end of the last line of replies written `code-…`
    /// (Gmail: `{session} - gsmtp`); none by default.
    public var replySuffix: String?
    /// The greeting's text after `220 <hostname> `, or with `greetingIsWhole`
    /// the whole text after `220 ` (a `banner` written with its code).
    public var banner: String?
    public var greetingIsWhole = false

    public var maxConnections: SinkLimit?
    /// Connection attempts per sending IP per time (Orange: 1,000 an hour).
    public var connectionRate: SinkRateLimit?
    public var maxMessagesPerConnection: SinkLimit?
    public var messageRate: SinkRateLimit?
    /// Messages per envelope sender domain (any sending IP): rotating IPs does
    /// not escape it (Gmail keeps quotas per IP and per SPF/DKIM domain).
    public var domainRate: SinkRateLimit?
    /// `max-rcpt-per-msg N "REPLY"`: recipients per transaction (answered at RCPT).
    public var maxRecipients: SinkLimit?
    /// `max-msg-size BYTES`: advertised as SIZE and enforced by the SMTP
    /// session (its own `552 5.3.4` text); nil keeps the session's default.
    public var maxMessageSize: Int?
    /// `max-line-length N`: longest DATA line including CRLF (session's 500 5.5.6).
    public var maxLineLength: Int?
    /// `bad-recipient-penalty P% of N`: when at least `percent` of a sending
    /// IP's last `window` recipients were unknown users or inactive mailboxes,
    /// the IP goes into the penalty box (reputation worsening with list hygiene).
    public var badRecipientPenalty: (percent: Int, window: Int)? {
        get { badRecipientPercent.map { ($0, badRecipientWindow) } }
        set { badRecipientPercent = newValue?.percent; badRecipientWindow = newValue?.window ?? 0 }
    }
    var badRecipientPercent: Int?
    var badRecipientWindow = 0
    /// `complaint-penalty P% of N`: when at least `percent` of the last
    /// `window` messages a sender (its IP, and its envelope domain where the
    /// profile keys on it) got accepted drew a complaint (the sink's own ARF
    /// reports, `--complaint-percent`), it goes into the penalty box. Gmail
    /// and Yahoo publish 0.3% as the spam rate not to reach.
    public var complaintPenalty: (percent: Double, window: Int)? {
        get { complaintPercent.map { ($0, complaintWindow) } }
        set { complaintPercent = newValue?.percent; complaintWindow = newValue?.window ?? 0 }
    }
    var complaintPercent: Double?
    var complaintWindow = 0
    /// `warm-up START/PERIOD [PHASE] "REPLY"`: a sending IP the provider has
    /// not seen before may send START messages in its first PERIOD, twice as
    /// many in each following one (the warm-up curve ESPs follow), counted at
    /// PHASE from its first connection; over the allowance it gets REPLY.
    public var warmUp: SinkRateLimit?
    public var penaltyBox: SinkPenaltyBox?
    public var recipientRules: [SinkRecipientRule] = []
    public var mailboxRate: SinkMailboxRate?
    public var greylist: SinkGreylist?
    public var bannerLatency: SinkLatency = .none
    public var commandLatency: SinkLatency = .none
    public var dataLatency: SinkLatency = .none
    public var randomFailures: [SinkRandomFailure] = []
    /// Probability that the connection is dropped during DATA (no reply).
    public var dropDuringData: Double = 0
    /// `450-anything@…` local parts answer with that code.
    public var scriptedReplies: Bool = true
    /// `require-dkim`, `require-dmarc-alignment`, `require-list-unsubscribe`
    /// (the 2024 bulk-sender rules), checked at the end of DATA.
    public var bulkSender = SinkBulkSenderRules()
    /// Close a connection that sent nothing for this long (421 4.4.2), in real seconds.
    public var idleTimeout: Double?
    /// `require-tls ["REPLY"]`: MAIL FROM without TLS gets this reply (Gmail's 421-4.7.29 by default).
    public var requireTLS: SinkReplyTemplate?
    /// Where `require-tls` was said: the sink refuses to start on it without a certificate.
    public var requireTLSLocation: ConfigLocation?
    /// `starttls offer|refuse|break`: what STARTTLS gets when the sink has a certificate.
    public var startTLS: SinkStartTLSMode = .offer

    public init(name: String) {
        self.name = name
        self.hostname = "mx.\(name).sink"
    }

    /// A profile that accepts everything, for `--accept-all`.
    public static func acceptAll(hostname: String = "accept-all.sink") -> SinkISPProfile {
        var p = SinkISPProfile(name: "accept-all")
        p.domains = ["*"]
        p.hostname = hostname
        p.scriptedReplies = false
        return p
    }
}
