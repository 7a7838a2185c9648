/// PowerMTA's bounce categories, spelled as in its accounting files (`bounceCat`).
public enum BounceCategory: String, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case badConfiguration = "bad-configuration"
    case badConnection = "bad-connection"
    case badDomain = "bad-domain"
    case badMailbox = "bad-mailbox"
    case contentRelated = "content-related"
    case inactiveMailbox = "inactive-mailbox"
    case invalidSender = "invalid-sender"
    case messageExpired = "message-expired"
    case noAnswerFromHost = "no-answer-from-host"
    case other = "other"
    case policyRelated = "policy-related"
    case protocolErrors = "protocol-errors"
    case quotaIssues = "quota-issues"
    case relayingIssues = "relaying-issues"
    case routingErrors = "routing-errors"
    case spamRelated = "spam-related"
    case virusRelated = "virus-related"
    /// Not a failure: PowerMTA's name for replies that mean delivery, which
    /// operators' `<bounce-category-patterns>` use (e.g. `/^2\./ success`).
    /// Accepted so such configs load; the built-in rules never give it.
    case success = "success"

    public var description: String { rawValue }
}
