import PeregrineSMTP
import PeregrineSpool
import PeregrineAccounting

/// A delivery status notification (RFC 3464) about one message: the
/// `multipart/report; report-type=delivery-status` message sent to the
/// envelope sender. Pure: values in, message bytes out; the daemon decides
/// whether one is due (NOTIFY, null sender, `deliver-local-dsn`) and spools it.
public struct DeliveryStatusReport: Sendable {
    /// RFC 3464 §2.3.3 action values Peregrine reports.
    public enum Action: String, Sendable {
        case failed, delayed, relayed
    }

    /// One recipient's per-recipient fields.
    public struct Recipient: Sendable {
        public var finalRecipient: String
        /// ORCPT as "addr-type;address" (RFC 3461), nil when not given.
        public var originalRecipient: String?
        public var action: Action
        public var reply: SMTPReply
        /// The host that gave the reply; nil when the reply is Peregrine's own (expiry, no MX).
        public var remoteMTA: String?
        /// Wall-clock seconds of the last attempt.
        public var lastAttempt: Int64
        public init(finalRecipient: String, originalRecipient: String?, action: Action, reply: SMTPReply,
                    remoteMTA: String?, lastAttempt: Int64) {
            self.finalRecipient = finalRecipient; self.originalRecipient = originalRecipient
            self.action = action; self.reply = reply; self.remoteMTA = remoteMTA; self.lastAttempt = lastAttempt
        }

        /// `Status:` (RFC 3463 code), the first word of the `b` record's `dsnStatus`.
        public var status: String {
            let s = AccountingRecord.dsnStatus(enhancedCode: reply.enhancedCode?.description, replyCode: reply.code)
            return String(s.prefix { $0 != " " })
        }

        /// `Diagnostic-Code:` value: "smtp; 550 5.1.1 text", the reply as the
        /// `b` record's `dsnDiag` carries it.
        public var diagnosticCode: String { "smtp; " + DeliveryStatusReport.headerSafe(reply.description) }
    }

    public var reportingMTA: String
    /// `From:` of the report (the postmaster address).
    public var from: String
    /// The original envelope sender (the report's only recipient).
    public var to: String
    /// ENVID of the original, xtext-decoded.
    public var envelopeID: String?
    /// Wall-clock seconds the original arrived.
    public var arrivalDate: Int64
    public var recipients: [Recipient]
    public var ret: DSNReturn

    public init(reportingMTA: String, from: String, to: String, envelopeID: String?, arrivalDate: Int64,
                recipients: [Recipient], ret: DSNReturn) {
        self.reportingMTA = reportingMTA; self.from = from; self.to = to; self.envelopeID = envelopeID
        self.arrivalDate = arrivalDate; self.recipients = recipients; self.ret = ret
    }

    /// The headers of the original: everything up to and including the blank
    /// line (or the whole message when it has no body).
    public static func headerSection(of message: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let n = message.count
        var i = 0
        while i < n {
            // A header section that starts with the blank line is empty.
            if i == 0, message[0] == 13, n > 1, message[1] == 10 { return UnsafeRawBufferPointer(rebasing: message[0..<2]) }
            if message[i] == 10, i + 1 < n {
                if message[i + 1] == 10 { return UnsafeRawBufferPointer(rebasing: message[0...(i + 1)]) }
                if message[i + 1] == 13, i + 2 < n, message[i + 2] == 10 {
                    return UnsafeRawBufferPointer(rebasing: message[0...(i + 2)])
                }
            }
            i += 1
        }
        return message
    }

    /// The report as it goes into the spool (CRLF lines). `messageID` is the
    /// report's own Message-ID (without brackets); `date` its Date.
    public func render(original: UnsafeRawBufferPointer, messageID: String, date: Int64) -> [UInt8] {
        let boundary = "=_peregrine_dsn_" + messageID.filter { $0.isLetter || $0.isNumber }
        let anyFailed = recipients.contains { $0.action == .failed }
        let anyDelayed = recipients.contains { $0.action == .delayed }
        let subject = anyFailed ? "Undelivered Mail Returned to Sender"
            : anyDelayed ? "Delayed Mail (still being retried)" : "Successful Mail Delivery Report"
        var out = ""
        out.reserveCapacity(2048)
        func line(_ s: String) { out += s; out += "\r\n" }
        line("From: Mail Delivery System <\(Self.headerSafe(from))>")
        line("To: <\(Self.headerSafe(to))>")
        line("Subject: \(subject)")
        line("Date: \(RFC5322DateTime.format(date))")
        line("Message-ID: <\(messageID)>")
        // RFC 3834: an automatic reply; auto-responders must not answer it.
        line("Auto-Submitted: auto-replied")
        line("MIME-Version: 1.0")
        line("Content-Type: multipart/report; report-type=delivery-status;")
        line("\tboundary=\"\(boundary)\"")
        line("")
        line("This is a MIME-encapsulated message.")
        line("")
        line("--\(boundary)")
        line("Content-Description: Notification")
        line("Content-Type: text/plain; charset=us-ascii")
        line("")
        line("This is the mail system at host \(Self.headerSafe(reportingMTA)).")
        line("")
        if anyFailed {
            line("I'm sorry to have to inform you that your message could not")
            line("be delivered to one or more recipients. The details are below.")
        } else if anyDelayed {
            line("Your message could not be delivered yet to one or more recipients;")
            line("delivery will be retried. You do not need to send it again.")
        } else {
            line("Your message was relayed to the following recipients, which asked")
            line("for a delivery report; the receiving system sends none of its own.")
        }
        line("")
        for r in recipients {
            line("<\(Self.headerSafe(r.finalRecipient))>: \(r.action.rawValue)")
            line("    \(Self.headerSafe(r.reply.description))")
        }
        line("")
        line("--\(boundary)")
        line("Content-Description: Delivery report")
        line("Content-Type: message/delivery-status")
        line("")
        line("Reporting-MTA: dns; \(Self.headerSafe(reportingMTA))")
        if let id = envelopeID, !id.isEmpty {
            // RFC 3464 §2.2.1: the ENVID as given; xtext keeps any byte a header cannot carry.
            line("Original-Envelope-Id: \(XText.encode(id.utf8))")
        }
        line("Arrival-Date: \(RFC5322DateTime.format(arrivalDate))")
        for r in recipients {
            line("")
            line("Final-Recipient: rfc822; \(Self.headerSafe(r.finalRecipient))")
            if let o = r.originalRecipient, let semi = o.firstIndex(of: ";") {
                line("Original-Recipient: \(Self.headerSafe(String(o[..<semi])));\(XText.encode(o[o.index(after: semi)...].utf8))")
            }
            line("Action: \(r.action.rawValue)")
            line("Status: \(r.status)")
            if let mta = r.remoteMTA, !mta.isEmpty { line("Remote-MTA: dns; \(Self.headerSafe(mta))") }
            line(Self.folded("Diagnostic-Code: \(r.diagnosticCode)"))
            line("Last-Attempt-Date: \(RFC5322DateTime.format(r.lastAttempt))")
        }
        line("")
        line("--\(boundary)")
        var bytes = Array(out.utf8)
        let returned: UnsafeRawBufferPointer
        if ret == .full {
            bytes += Array("Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\n".utf8)
            returned = original
        } else {
            bytes += Array("Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n".utf8)
            returned = Self.headerSection(of: original)
        }
        bytes.append(contentsOf: returned)
        if let last = returned.last, last != 10 { bytes += [13, 10] }
        bytes += Array("\r\n--\(boundary)--\r\n".utf8)
        return bytes
    }

    /// Text from a peer or the config made safe inside a header line: control bytes become spaces.
    static func headerSafe(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 < 0x20 || $0 == 0x7F ? 0x20 : $0 }, as: UTF8.self)
    }

    /// Folds a long field at spaces (RFC 5322 §2.2.3), continuation lines indented.
    static func folded(_ field: String) -> String {
        guard field.utf8.count > 78 else { return field }
        var out = ""
        var lineLength = 0
        for (i, word) in field.split(separator: " ", omittingEmptySubsequences: false).enumerated() {
            if i > 0 {
                if lineLength + 1 + word.utf8.count > 78 && lineLength > 0 {
                    out += "\r\n\t"; lineLength = 1
                } else {
                    out += " "; lineLength += 1
                }
            }
            out += word; lineLength += word.utf8.count
        }
        return out
    }

}
