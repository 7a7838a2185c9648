import PeregrineSMTP

extension ReplyText {
    /// The matchable form of a reply parsed by PeregrineSMTP's client session
    /// (lines there already have their code and enhanced code stripped).
    public init(_ reply: SMTPReply) {
        self.init(code: reply.code, enhancedCode: reply.enhancedCode?.description, lines: reply.lines)
    }
}

extension SMTPPatternList {
    /// The actions for a remote reply; empty when no rule matches.
    public func actions(for reply: SMTPReply) -> [SMTPPatternAction] {
        actions(for: ReplyText(reply))
    }
}

extension BounceClassifier {
    /// The bounce category of a remote reply.
    public func classify(_ reply: SMTPReply) -> BounceCategory {
        classify(ReplyText(reply))
    }
}
