import PeregrineConfig

/// The 2024 bulk-sender rules a profile enforces at the end of DATA
/// (Gmail and Yahoo since February 2024): each is off (nil) or the reply a
/// failing message gets.
public struct SinkBulkSenderRules: Hashable, Sendable {
    /// `require-dkim`: at least one DKIM signature verifies (with `--dkim-key` keys).
    public var requireDKIM: SinkReplyTemplate?
    /// `require-dmarc-alignment`: a verified signature's d= is the From
    /// domain or a parent of it (DMARC relaxed alignment; no SPF here).
    public var requireDMARCAlignment: SinkReplyTemplate?
    /// `require-list-unsubscribe`: RFC 8058 `List-Unsubscribe` with an https
    /// URI plus `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, both
    /// covered by a verified signature (RFC 8058 §4).
    public var requireListUnsubscribe: SinkReplyTemplate?

    public init() {}

    public var isActive: Bool { requireDKIM != nil || requireDMARCAlignment != nil || requireListUnsubscribe != nil }

    /// Gmail's reply to mail that passes neither SPF nor DKIM, as seen in a
    /// real bounce (support.webcentral.au/docs/delivering-emails-to-gmail; the
    /// same text at secumail.co.ke/?p=17444). The sink checks no SPF, so it
    /// says SPF did not pass either.
    public static let gmailUnauthenticated = SinkReplyTemplate(
        code: 550, enhanced: "5.7.26",
        lines: ["This mail is unauthenticated, which poses a security risk to the sender and Gmail users, and has been "
                + "blocked. The sender must authenticate with at least one of SPF or DKIM. For this message, DKIM checks "
                + "did not pass and SPF check for [{sender-domain}] did not pass with ip: [{ip}]. The sender should visit "
                + "https://support.google.com/mail/answer/81126#authentication for instructions on setting up authentication."],
        continued: true)

    /// Gmail's DMARC rejection (DOMAIN.md; Google's SMTP error reference, 550 5.7.26).
    public static let gmailDMARC = SinkReplyTemplate(
        code: 550, enhanced: "5.7.26",
        lines: ["Unauthenticated email from {from-domain} is not accepted due to domain's DMARC policy. Please contact "
                + "the administrator of {from-domain} domain if this was a legitimate mail. To learn about the DMARC "
                + "initiative, go to https://support.google.com/mail/?p=DmarcRejection"],
        continued: true)

    /// Yahoo's authentication/policy refusal (help.yahoo.com/kb/SLN7253.html:
    /// "554 5.7.9: Message not accepted for policy reasons"; the URL as on
    /// smtp.codes/yahoo and Yahoo's error-code page).
    public static let yahooPolicy = SinkReplyTemplate(
        code: 554, enhanced: "5.7.9",
        lines: ["Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes"],
        continued: false)

    /// `require-X yes|no` (yes: Gmail's text for that rule) or `require-X "REPLY"`.
    mutating func apply(_ node: ConfigNode, _ args: [String]) throws(ConfigError) {
        let fallback: SinkReplyTemplate = node.name == "require-dmarc-alignment" ? Self.gmailDMARC : Self.gmailUnauthenticated
        let reply: SinkReplyTemplate?
        switch args.count {
        case 0: reply = fallback
        case 1:
            if let on = try? ConfigValue.bool(args[0]) {
                reply = on ? fallback : nil
            } else {
                reply = try SinkProfileParser.template(node, args[0])
            }
        default: throw node.error("\(node.name) takes yes|no or one quoted reply")
        }
        switch node.name {
        case "require-dkim": requireDKIM = reply
        case "require-dmarc-alignment": requireDMARCAlignment = reply
        default: requireListUnsubscribe = reply
        }
    }
}
