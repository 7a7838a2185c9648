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
        // Text set while a remote reply is still pending (never read, so never
        // formatted) replaces it: the pending reply must not come back on read.
        q.noteReply(SMTPReply(451, "4.3.0", "pending and unread"))
        q.lastReply = "timeout in dataEnd"
        #expect(q.lastReply == "timeout in dataEnd")
        // And a later remote reply replaces the text.
        q.noteReply(SMTPReply(250, "2.0.0", "queued as 1"))
        #expect(q.lastReply == "250 2.0.0 queued as 1")
    }
}
