import PeregrineAccounting
import PeregrineEngine

/// The report-reading path for the fuzz target (Tests/Fuzz): a message sent
/// to both processors, with no socket or accounting file. Not API.
@_spi(Fuzzing)
public enum InboundReportPath {
    /// The records the message gives when it arrives for the bounce
    /// processor's `bounces+a=b.example@bounce.invalid` (a VERP address) and
    /// the feedback-loop processor's `fbl@fbl.invalid`.
    public static func records(_ message: [UInt8]) -> [AccountingRecord] {
        processor.process(message, recipients: ["bounces+a=b.example@bounce.invalid", "fbl@fbl.invalid"],
                          peer: "192.0.2.1", now: 1_796_000_000).records
    }

    private static let processor: InboundReportProcessor = {
        var bounce = InboundProcessorSettings(kind: .bounce)
        var feedbackLoop = InboundProcessorSettings(kind: .feedbackLoop)
        // Literal patterns that compile: a failure here is a programming error, caught by the first run.
        bounce.addresses = (try? CompiledRegex("^bounces[+-]")).map { [$0] } ?? []
        feedbackLoop.addresses = (try? CompiledRegex("^fbl@")).map { [$0] } ?? []
        precondition(!bounce.addresses.isEmpty && !feedbackLoop.addresses.isEmpty, "fuzz processor patterns")
        return InboundReportProcessor(bounce: bounce, feedbackLoop: feedbackLoop, classifier: BounceClassifier())
    }()
}
