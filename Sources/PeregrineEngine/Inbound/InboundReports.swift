import PeregrineSMTP

/// What a bounce report that came back says about one recipient of an
/// earlier message (an `rb` accounting record), and how it links to that
/// message: the recipient, the job id and ENVID it carried, its Message-ID.
public struct InboundBounce: Sendable, Equatable {
    public var recipient: String
    public var originalRecipient: String = ""
    public var action: String = "failed"
    /// RFC 3463 code, e.g. "5.1.1".
    public var status: String
    /// "smtp;550 5.1.1 …" as the `b` record writes it.
    public var diagnostic: String
    /// The host that refused (Remote-MTA), else the one that reported (Reporting-MTA).
    public var remoteMTA: String = ""
    public var category: BounceCategory = .other
    /// Links to the original, when the report returned its headers.
    public var originalSender: String = ""
    public var jobID: String = ""
    public var envelopeID: String = ""
    public var messageID: String = ""
    /// "rfc3464" or the non-standard format's name.
    public var format: String
}

/// An ARF complaint (RFC 5965) about one earlier message (an `f` record).
public struct InboundComplaint: Sendable, Equatable {
    /// Feedback-Type: abuse, fraud, virus, not-spam, other.
    public var feedbackType: String
    /// The provider that reported it: Reporting-MTA, else the report's From domain.
    public var reportingMTA: String
    public var userAgent: String = ""
    /// The complaining recipient of the original (Original-Rcpt-To, else the original's To).
    public var recipient: String
    public var originalSender: String = ""
    public var sourceIP: String = ""
    public var jobID: String = ""
    public var messageID: String = ""
}

/// Reads bounce reports (RFC 3464 and the common non-standard forms) and
/// ARF complaints. Pure: bytes in, values out.
public enum InboundReportParser {
    /// The bounces a report carries (failed recipients only: delayed,
    /// delivered and relayed reports are not bounces). Empty when the
    /// message is not a bounce report Peregrine can read.
    public static func bounces(in bytes: [UInt8], classifier: BounceClassifier = BounceClassifier(),
                               verpRecipient: String? = nil) -> [InboundBounce] {
        let message = MIMEEntity(bytes)
        var out: [InboundBounce] = []
        if message.contentType == "multipart/report",
           message.contentTypeParameter("report-type")?.lowercased() == "delivery-status" {
            out = rfc3464(message)
        }
        if out.isEmpty { out = plainText(message) }
        let original = returnedOriginal(of: message)
        for i in out.indices {
            if out[i].recipient.isEmpty, let v = verpRecipient { out[i].recipient = v }
            if let o = original {
                if out[i].jobID.isEmpty { out[i].jobID = o.field("X-Job") ?? "" }
                out[i].messageID = MIMEEntity.address(o.field("Message-ID") ?? "")
                if out[i].originalSender.isEmpty, let rp = o.field("Return-Path") { out[i].originalSender = MIMEEntity.address(rp) }
            }
            let reply = ReplyText(code: Int(out[i].diagnostic.drop { !$0.isNumber }.prefix(3)) ?? 550,
                                  enhancedCode: out[i].status,
                                  lines: [String(out[i].diagnostic.drop { $0 != " " }.dropFirst())])
            out[i].category = classifier.classify(reply)
        }
        return out.filter { !$0.recipient.isEmpty }
    }

    /// The complaint an ARF report carries, nil when the message is not one.
    public static func complaint(in bytes: [UInt8]) -> InboundComplaint? {
        let message = MIMEEntity(bytes)
        guard message.contentType == "multipart/report",
              message.contentTypeParameter("report-type")?.lowercased() == "feedback-report" else { return nil }
        let parts = message.parts
        guard let report = parts.first(where: { $0.contentType == "message/feedback-report" }) else { return nil }
        let fields = MIMEEntity(report.body + [13, 10])
        guard let type = fields.field("Feedback-Type") else { return nil }
        let original = returnedOriginal(of: message)
        var provider = fields.field("Reporting-MTA").map(MIMEEntity.address) ?? ""
        if provider.isEmpty, let from = message.field("From") {
            let address = MIMEEntity.address(from)
            provider = address.split(separator: "@").last.map(String.init) ?? address
        }
        var recipient = fields.field("Original-Rcpt-To").map(MIMEEntity.address) ?? ""
        if recipient.isEmpty, let to = original?.field("To") { recipient = MIMEEntity.address(to) }
        return InboundComplaint(
            feedbackType: type.lowercased(), reportingMTA: provider, userAgent: fields.field("User-Agent") ?? "",
            recipient: recipient, originalSender: fields.field("Original-Mail-From").map(MIMEEntity.address) ?? "",
            sourceIP: fields.field("Source-IP") ?? "", jobID: original?.field("X-Job") ?? "",
            messageID: MIMEEntity.address(original?.field("Message-ID") ?? ""))
    }

    /// VERP: `bounces+LOCAL=DOMAIN@bounce.example` (or `-` instead of `+`)
    /// names the original recipient LOCAL@DOMAIN.
    public static func verpRecipient(_ address: String) -> String? {
        guard let at = address.lastIndex(of: "@") else { return nil }
        let local = address[..<at]
        // '+' first (what VERP.returnPath writes): a sender like bounces-list+u=d keeps its '-'.
        guard let sep = local.firstIndex(of: "+") ?? local.firstIndex(of: "-") else { return nil }
        let tagged = local[local.index(after: sep)...]
        guard let eq = tagged.lastIndex(of: "="), eq != tagged.startIndex, tagged.index(after: eq) < tagged.endIndex else { return nil }
        return "\(tagged[..<eq])@\(tagged[tagged.index(after: eq)...])"
    }

    static func rfc3464(_ message: MIMEEntity) -> [InboundBounce] {
        guard let status = message.parts.first(where: { $0.contentType == "message/delivery-status" }) else { return [] }
        let groups = status.fieldGroups
        guard let perMessage = groups.first else { return [] }
        let reporting = MIMEEntity.address(perMessage.field("Reporting-MTA") ?? "")
        // The ENVID as xtext (RFC 3461 §4.4), as Peregrine writes it; a value that is no valid xtext is kept as written.
        let rawEnvid = perMessage.field("Original-Envelope-Id") ?? ""
        let envid = XText.decode(rawEnvid.utf8).map { String(decoding: $0, as: UTF8.self) } ?? rawEnvid
        var out: [InboundBounce] = []
        for g in groups.dropFirst() {
            let action = (g.field("Action") ?? "").lowercased()
            guard action == "failed" else { continue }
            let recipient = MIMEEntity.address(g.field("Final-Recipient") ?? g.field("Original-Recipient") ?? "")
            let code = g.field("Status").map { String($0.prefix { !$0.isWhitespace }) } ?? "5.0.0"
            var diag = g.field("Diagnostic-Code") ?? ""
            // "smtp; 550 …" → "smtp;550 …", the b record's form.
            if let semi = diag.firstIndex(of: ";") {
                diag = diag[..<semi].lowercased() + ";" + MIMEEntity.trim(String(diag[diag.index(after: semi)...]))
            } else if !diag.isEmpty {
                diag = "smtp;" + diag
            }
            if diag.isEmpty { diag = "smtp;550 \(code)" }
            var b = InboundBounce(recipient: recipient, status: code, diagnostic: diag, format: "rfc3464")
            b.originalRecipient = g.field("Original-Recipient") ?? ""
            b.action = action
            b.remoteMTA = g.field("Remote-MTA").map(MIMEEntity.address) ?? reporting
            b.envelopeID = envid
            out.append(b)
        }
        return out
    }

    /// Non-standard bounces: qmail ("<a@b>:" then the reply), Exim (an
    /// indented address, then "SMTP error … :" and the reply) and the many
    /// that follow either shape. A recipient counts only with a 5xx reply.
    static func plainText(_ message: MIMEEntity) -> [InboundBounce] {
        var text = message.decodedText
        if let first = message.parts.first(where: { $0.contentType == "text/plain" }) { text = first.decodedText }
        let format: String
        if text.contains("qmail-send program") { format = "qmail" }
        else if text.contains("created automatically by mail delivery software") { format = "exim" }
        else { format = "plain" }
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { MIMEEntity.trim(String($0)) }
        var out: [InboundBounce] = []
        var seen: Set<String> = []
        for (i, line) in lines.enumerated() {
            guard let address = addressLine(line) else { continue }
            // The reply follows within a few lines (qmail: the next one; Exim: after the host line).
            for candidate in lines[(i + 1)..<min(lines.count, i + 6)] {
                if addressLine(candidate) != nil { break }
                guard let (code, enhanced, rest) = reply(in: candidate), code >= 500, code < 600 else { continue }
                guard seen.insert(address.lowercased()).inserted else { break }
                let status = enhanced ?? "5.0.0"
                out.append(InboundBounce(recipient: address, status: status,
                                         diagnostic: "smtp;\(code)\(enhanced.map { " " + $0 } ?? "") \(rest)",
                                         format: format))
                break
            }
        }
        return out
    }

    /// "<a@b>:" or "a@b" alone on a line.
    static func addressLine(_ line: String) -> String? {
        var s = Substring(line)
        if s.hasSuffix(":") { s = s.dropLast() }
        if s.hasPrefix("<") && s.hasSuffix(">") { s = s.dropFirst().dropLast() }
        guard !s.isEmpty, !s.contains(" "), let at = s.firstIndex(of: "@"), at != s.startIndex,
              s.index(after: at) < s.endIndex, s[s.index(after: at)...].contains(".") else { return nil }
        return String(s)
    }

    /// The first "5xx[ -]x.y.z text" in a line: code, enhanced code, text after them.
    static func reply(in line: String) -> (Int, String?, String)? {
        let chars = Array(line)
        var i = 0
        while i + 3 <= chars.count {
            let isStart = i == 0 || !(chars[i - 1].isLetter || chars[i - 1].isNumber || chars[i - 1] == ".")
            if isStart, let d0 = chars[i].wholeNumberValue, (4...5).contains(d0),
               let d1 = chars[i + 1].wholeNumberValue, let d2 = chars[i + 2].wholeNumberValue,
               i + 3 == chars.count || chars[i + 3] == " " || chars[i + 3] == "-" {
                let code = d0 * 100 + d1 * 10 + d2
                var rest = i + 3 < chars.count ? String(chars[(i + 4)...]) : ""
                var enhanced: String?
                let first = String(rest.prefix { !$0.isWhitespace })
                let parts = first.split(separator: ".")
                if parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }), first.first == line[line.index(line.startIndex, offsetBy: i)] {
                    enhanced = first
                    rest = MIMEEntity.trim(String(rest.dropFirst(first.count)))
                }
                return (code, enhanced, rest)
            }
            i += 1
        }
        return nil
    }

    /// The original message a report returned (message/rfc822 or
    /// text/rfc822-headers part), as an entity whose fields are its headers.
    static func returnedOriginal(of message: MIMEEntity) -> MIMEEntity? {
        var parts = message.parts
        // A plain-text bounce may wrap the original in a multipart/mixed.
        if parts.isEmpty { return nil }
        if let nested = parts.first(where: { $0.contentType.hasPrefix("multipart/") }) { parts += nested.parts }
        guard let p = parts.first(where: { ["message/rfc822", "text/rfc822-headers"].contains($0.contentType) }) else { return nil }
        return MIMEEntity(p.body)
    }
}
