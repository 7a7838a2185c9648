/// The kind of an accounting record, as PowerMTA names them (first CSV column `type`).
public enum AccountingRecordType: String, CaseIterable, Hashable, Sendable {
    /// Received: a message (recipient) accepted over SMTP.
    case received = "r"
    /// Delivered: the remote MTA accepted the recipient (2xx).
    case delivered = "d"
    /// Bounced: permanent failure (5xx, expiry, pattern-list bounce, no MX).
    case bounced = "b"
    /// Transient failure of one recipient (4xx); it will be retried.
    case transient = "t"
    /// Transient failure of a whole queue (connection level: every MX unreachable).
    case transientQueue = "tq"
    /// Feedback loop report: an ARF complaint read by `<feedback-loop-processor>`.
    /// Feedback-Type goes in `bounceCat`, the reporting provider in `dsnMta`,
    /// the original's source IP in `dlvSourceIp` (no columns of their own yet).
    case feedbackLoop = "f"
    /// Remote (asynchronous) bounce: a bounce report read by `<bounce-processor>`.
    case remoteBounce = "rb"
    /// Suppressed: a recipient refused at injection because it is on the
    /// suppression list (Peregrine's own type; PowerMTA has none). `dsnStatus`
    /// is `5.7.1`, `dsnDiag` the 550 reply, `bounceCat` the list's reason
    /// (`hard-bounce`, `complaint`, `operator`), `srcMta` the client.
    case suppressed = "s"
    /// Webhook event undeliverable (Peregrine's own, no PowerMTA equivalent):
    /// an event a `<webhook>` endpoint did not acknowledge within
    /// `webhook-max-age`. `dsnMta` holds the webhook's name, `dsnDiag` the
    /// event type, id and the endpoint's last error, `bounceCat` "webhook-undeliverable";
    /// `orig`/`rcpt`/`jobId`/`vmta` are the event's.
    case webhookUndeliverable = "w"

    /// Parses `r`, `d`, `b`, `t`, `tq`, `f`, `rb`, `s`, `w` (as in `records d,b` of `<acct-file>`).
    public init?(code: some StringProtocol) {
        self.init(rawValue: String(code).lowercased())
    }
}

/// One accounting record. Field names are PowerMTA's (DOMAIN.md, "Accounting files").
///
/// Times are wall-clock seconds since the Unix epoch (UTC); they are written
/// as `2026-11-29 08:41:36+0000`. Empty strings and `nil` are written as empty fields.
public struct AccountingRecord: Hashable, Sendable {
    public var type: AccountingRecordType
    /// When the record was logged.
    public var timeLogged: Int64
    /// When the message was received (queued).
    public var timeQueued: Int64?
    /// Envelope sender (MAIL FROM), without angle brackets.
    public var orig: String
    /// Envelope recipient (RCPT TO).
    public var rcpt: String
    /// Original recipient (DSN ORCPT), when given.
    public var orcpt: String
    /// RFC 3464 action: `relayed` (d), `failed` (b), `delayed` (t, tq), `delivered`, `expanded`.
    public var dsnAction: String
    /// Enhanced status with its RFC 3463 text, e.g. `2.0.0 (success)`.
    public var dsnStatus: String
    /// Diagnostic, e.g. `smtp;250 2.0.0 OK`.
    public var dsnDiag: String
    /// The remote MTA, e.g. `gmail-smtp-in.l.google.com (142.250.1.26)`.
    public var dsnMta: String
    /// Bounce category (b records), e.g. `bad-mailbox`.
    public var bounceCat: String
    /// How the message came in: `smtp`, `pickup`, `api`.
    public var srcType: String
    /// The injecting client, e.g. `client.example (127.0.0.1)`.
    public var srcMta: String
    /// How delivery was attempted: `smtp`.
    public var dlvType: String
    public var dlvSourceIp: String
    public var dlvDestinationIp: String
    /// ESMTP extensions the remote announced, e.g. `PIPELINING,8BITMIME,SIZE`.
    public var dlvEsmtpAvailable: String
    /// Message size in bytes as delivered.
    public var dlvSize: Int?
    public var vmta: String
    public var jobId: String
    public var envId: String
    /// When delivery of the message was first attempted.
    public var timeFirstAttempt: Int64?
    /// Seconds between `timeQueued` and `timeLogged`.
    public var totalSecondsQueued: Int64?
    /// The queue (`domain/vmta`); mostly for `tq` records.
    public var queue: String
    /// TLS protocol of the delivery connection (e.g. `TLSv1.3`), once TLS lands.
    public var dlvTlsProtocol: String
    /// TLS cipher of the delivery connection, once TLS lands.
    public var dlvTlsCipher: String
    /// The SMTP AUTH user the message was injected as (r records); empty without a login.
    public var rcvSmtpUser: String = ""
    /// `vmtaPool`: the `<virtual-mta-pool>` the message was injected for (its `vmta` is the member that took it); empty when none.
    public var vmtaPool: String

    public init(type: AccountingRecordType, timeLogged: Int64, timeQueued: Int64? = nil,
                orig: String = "", rcpt: String = "", orcpt: String = "",
                dsnAction: String = "", dsnStatus: String = "", dsnDiag: String = "", dsnMta: String = "",
                bounceCat: String = "", srcType: String = "", srcMta: String = "",
                dlvType: String = "", dlvSourceIp: String = "", dlvDestinationIp: String = "",
                dlvEsmtpAvailable: String = "", dlvSize: Int? = nil,
                vmta: String = "", jobId: String = "", envId: String = "",
                timeFirstAttempt: Int64? = nil, totalSecondsQueued: Int64? = nil, queue: String = "",
                dlvTlsProtocol: String = "", dlvTlsCipher: String = "", vmtaPool: String = "") {
        self.type = type; self.timeLogged = timeLogged; self.timeQueued = timeQueued
        self.orig = orig; self.rcpt = rcpt; self.orcpt = orcpt
        self.dsnAction = dsnAction; self.dsnStatus = dsnStatus; self.dsnDiag = dsnDiag; self.dsnMta = dsnMta
        self.bounceCat = bounceCat; self.srcType = srcType; self.srcMta = srcMta
        self.dlvType = dlvType; self.dlvSourceIp = dlvSourceIp; self.dlvDestinationIp = dlvDestinationIp
        self.dlvEsmtpAvailable = dlvEsmtpAvailable; self.dlvSize = dlvSize
        self.vmta = vmta; self.jobId = jobId; self.envId = envId
        self.timeFirstAttempt = timeFirstAttempt; self.totalSecondsQueued = totalSecondsQueued
        self.queue = queue; self.dlvTlsProtocol = dlvTlsProtocol; self.dlvTlsCipher = dlvTlsCipher
        self.vmtaPool = vmtaPool
    }

    /// Column order of every accounting file. One header for every record
    /// type; fields a type does not use are empty. New columns are only ever
    /// appended at the end, so readers keyed by name keep working.
    public static let fieldNames: [String] = [
        "type", "timeLogged", "timeQueued", "orig", "rcpt", "orcpt",
        "dsnAction", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat",
        "srcType", "srcMta", "dlvType", "dlvSourceIp", "dlvDestinationIp",
        "dlvEsmtpAvailable", "dlvSize", "vmta", "jobId", "envId",
        "timeFirstAttempt", "totalSecondsQueued", "queue", "dlvTlsProtocol", "dlvTlsCipher",
        "rcvSmtpUser", "vmtaPool",
    ]
}

// MARK: - Helpers for the fields operators grep

extension AccountingRecord {
    /// `dsnStatus` text: `2.0.0` → `2.0.0 (success)`, `5.1.1` → `5.1.1 (bad destination mailbox address)`.
    /// Without an enhanced code, derives `X.0.0` from the reply code's class.
    public static func dsnStatus(enhancedCode: String?, replyCode: Int) -> String {
        let code: String
        if let e = enhancedCode, !e.isEmpty {
            code = e
        } else {
            let cls = replyCode / 100
            code = (cls == 2 || cls == 4 || cls == 5) ? "\(cls).0.0" : "4.0.0"
        }
        return "\(code) (\(dsnStatusText(code)))"
    }

    /// RFC 3463 subject/detail descriptions, the way PowerMTA words them.
    public static func dsnStatusText(_ code: String) -> String {
        let parts = code.split(separator: ".")
        // Only canonical decimals name a table entry ("01" does not).
        guard parts.count == 3, let subject = Int(parts[1]), let detail = Int(parts[2]),
              String(subject) == parts[1], String(detail) == parts[2] else { return "undefined status" }
        return dsnStatusText(statusClass: parts[0] == "2" ? 2 : 0, subject: subject, detail: detail).description
    }

    /// The same table keyed by numbers, for encoding without Strings.
    public static func dsnStatusText(statusClass: Int, subject: Int, detail: Int) -> StaticString {
        switch (subject, detail) {
        case (0, 0): return statusClass == 2 ? "success" : "undefined status"
        case (1, 0): return "other address status"
        case (1, 1): return "bad destination mailbox address"
        case (1, 2): return "bad destination system address"
        case (1, 3): return "bad destination mailbox address syntax"
        case (1, 6): return "destination mailbox has moved"
        case (1, 7): return "bad sender's mailbox address syntax"
        case (1, 8): return "bad sender's system address"
        case (2, 0): return "other or undefined mailbox status"
        case (2, 1): return "mailbox disabled, not accepting messages"
        case (2, 2): return "mailbox full"
        case (2, 3): return "message length exceeds administrative limit"
        case (3, 0): return "other or undefined mail system status"
        case (3, 1): return "mail system full"
        case (3, 4): return "message too big for system"
        case (4, 0): return "other or undefined network or routing status"
        case (4, 1): return "no answer from host"
        case (4, 2): return "bad connection"
        case (4, 4): return "unable to route"
        case (4, 5): return "network congestion"
        case (4, 6): return "routing loop detected"
        case (4, 7): return "delivery time expired"
        case (5, 0): return "other or undefined protocol status"
        case (5, 1): return "invalid command"
        case (5, 2): return "syntax error"
        case (5, 3): return "too many recipients"
        case (6, 0): return "other or undefined media error"
        case (7, 0): return "other or undefined security status"
        case (7, 1): return "delivery not authorized, message refused"
        default: return "undefined status"
        }
    }

    /// `dsnDiag` text for an SMTP reply: `smtp;250 2.0.0 OK`. Multi-line replies
    /// are joined with spaces (one line per record keeps files greppable).
    public static func dsnDiag(smtpReply: String) -> String {
        var out = "smtp;"
        var lastWasBreak = false
        for ch in smtpReply.unicodeScalars {
            if ch == "\r" || ch == "\n" {
                if !lastWasBreak { out.unicodeScalars.append(" ") }
                lastWasBreak = true
            } else {
                out.unicodeScalars.append(ch)
                lastWasBreak = false
            }
        }
        while out.last == " " { out.removeLast() }
        return out
    }
}
