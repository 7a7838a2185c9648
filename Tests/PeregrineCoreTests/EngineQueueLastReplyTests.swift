import Testing
import PeregrineSMTP
@testable import PeregrineEngine

/// `lastReply` keeps a remote reply unformatted until someone reads it.
@Suite struct EngineQueueLastReplyTests {
    @Test func remoteRepliesAreFormattedWhenReadAndTextReplacesThem() {
        let q = DeliveryQueue(key: QueueKey(domain: "gmail.com", vmta: "v"), policy: DomainSettings())
        #expect(q.lastReply == "")
        q.noteReply(SMTPReply(code: 421, enhancedCode: EnhancedStatusCode("4.7.0"), lines: ["Try again later,", "closing connection."]))
        #expect(q.lastReply == "421 4.7.0 Try again later, closing connection.")
        q.lastReply = "timeout in dataEnd"
        #expect(q.lastReply == "timeout in dataEnd")
        q.noteReply(SMTPReply(250, "2.0.0", "queued as 1"))
        #expect(q.lastReply == "250 2.0.0 queued as 1")
    }
}
