/// Variable envelope return paths. PowerMTA (`verp-default`, XVERP) and
/// Postfix (XVERP, default delimiters `+=`) write the recipient into the
/// sender's local part: `bounces@esp.example` to `user@isp.example` goes out
/// as MAIL FROM:<bounces+user=isp.example@esp.example>, so a bounce names the
/// recipient in its own envelope (InboundReportParser.verpRecipient reads it back).
public enum VERP {
    /// The return path for `recipient` of a message from `sender`. The null
    /// sender stays null (a bounce is never VERPed); a sender or recipient
    /// without a domain is sent unchanged rather than made into a wrong address.
    public static func returnPath(sender: String, recipient: String) -> String {
        guard !sender.isEmpty,
              let senderAt = sender.lastIndex(of: "@"), senderAt != sender.startIndex,
              let rcptAt = recipient.lastIndex(of: "@"), rcptAt != recipient.startIndex,
              recipient.index(after: rcptAt) < recipient.endIndex else { return sender }
        let rcptLocal = recipient[..<rcptAt]
        let rcptDomain = recipient[recipient.index(after: rcptAt)...]
        return "\(sender[..<senderAt])+\(rcptLocal)=\(rcptDomain)\(sender[senderAt...])"
    }
}
