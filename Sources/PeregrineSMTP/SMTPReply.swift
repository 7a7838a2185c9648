/// An SMTP reply: a three-digit code, an optional RFC 3463 enhanced status
/// code and one or more text lines (multi-line replies).
///
/// This parsed form is what pattern lists and bounce classification match.
public struct SMTPReply: Hashable, Sendable {
    /// The basic reply code, 200...599.
    public var code: Int
    /// The enhanced status code, when the peer sent one (or we will send one).
    public var enhancedCode: EnhancedStatusCode?
    /// The text of each line, without code, separator or enhanced code.
    public var lines: [String]

    public init(code: Int, enhancedCode: EnhancedStatusCode? = nil, lines: [String]) {
        self.code = code
        self.enhancedCode = enhancedCode
        self.lines = lines.isEmpty ? [""] : lines
    }

    public init(code: Int, enhancedCode: EnhancedStatusCode? = nil, _ text: String) {
        self.init(code: code, enhancedCode: enhancedCode, lines: [text])
    }

    /// Convenience: `SMTPReply(250, "2.1.0", "Ok")`.
    public init(_ code: Int, _ enhanced: String?, _ text: String) {
        self.init(code: code, enhancedCode: enhanced.flatMap { EnhancedStatusCode($0) }, lines: [text])
    }

    public var isPositiveCompletion: Bool { code >= 200 && code < 300 }
    public var isPositiveIntermediate: Bool { code >= 300 && code < 400 }
    public var isTransientFailure: Bool { code >= 400 && code < 500 }
    public var isPermanentFailure: Bool { code >= 500 }
    /// 421: the service is closing the transmission channel.
    public var isServiceClosing: Bool { code == 421 }

    /// All text lines joined with a space (what pattern lists match against,
    /// together with `description`).
    public var text: String { lines.joined(separator: " ") }
}

extension SMTPReply: CustomStringConvertible {
    /// One-line rendering: "550 5.1.1 text line 1 text line 2".
    public var description: String {
        var s = String(code)
        if let e = enhancedCode { s += " " + e.description }
        let t = text
        if !t.isEmpty { s += " " + t }
        return s
    }
}

/// A reply can be thrown or carried in a `Result` as the reason something failed.
extension SMTPReply: Error {}
