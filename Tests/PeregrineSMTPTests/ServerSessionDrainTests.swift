import Testing
import PeregrineSMTP
import PeregrineIO

/// Shutdown drain (issue 12, item 8; DaemonShutdownTests' known issue): a
/// client mid-transaction gets 421 4.3.2 at its next command or at the
/// owner's drain deadline, never a bare EOF.
@Suite struct ServerSessionDrainTests {
    static let shuttingDown = SMTPReply(421, "4.3.2", "mx.test service shutting down, closing connection")

    @Test func theNextCommandAfterTheDrainBeganGets421AndTheSessionCloses() {
        let h = ServerHarness()
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
        h.session.beginDrain(Self.shuttingDown)
        #expect(h.session.isDraining)
        #expect(!h.session.isClosed, "nothing is said before the client's next command")
        let out = h.send("DATA\r\n")
        #expect(codes(out) == [421], "\(out)")
        #expect(out.contains("4.3.2"))
        #expect(h.session.isClosed)
        #expect(h.delegate.aborts == 1, "the open transaction is aborted")
    }

    @Test func pipelinedCommandsAfterTheFirstGetNoFurtherReplies() {
        let h = ServerHarness()
        h.send("EHLO client.test\r\n")
        h.session.beginDrain(Self.shuttingDown)
        let out = h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        #expect(codes(out) == [421], "\(out)")
        #expect(h.session.isClosed)
    }

    @Test func aBodyInProgressReachesItsEndOfDataDecision() {
        var decisions = 0
        let h = ServerHarness { request in
            if case .endOfData = request { decisions += 1; return .reply(Self.shuttingDown) }
            return .accept
        }
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n")
        h.session.beginDrain(Self.shuttingDown)
        let out = h.send("body line\r\n.\r\n")
        #expect(decisions == 1, "the body's end still goes to the owner")
        #expect(codes(out) == [421], "\(out)")
        #expect(h.session.isClosed)
    }

    @Test func aPendingDecisionIsAnsweredFirstThenTheNextCommandGets421() {
        let h = ServerHarness { request in
            if case .endOfData = request { return .pending }
            return .accept
        }
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.session.isAwaitingDecision)
        h.session.beginDrain(Self.shuttingDown)
        #expect(h.session.drainDeadlinePassed().shouldClose == false, "a commit in progress is waited for")
        h.session.completeMessage()
        #expect(codes(h.takeOutput()) == [250], "the committed message gets its 250")
        #expect(!h.session.isClosed)
        #expect(codes(h.send("QUIT\r\n")) == [421])
        #expect(h.session.isClosed)
    }

    @Test func aSilentClientGetsTheReplyAtTheDrainDeadline() {
        let h = ServerHarness()
        h.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n")
        h.session.beginDrain(Self.shuttingDown)
        let actions = h.session.drainDeadlinePassed()
        #expect(actions.shouldClose)
        let out = h.takeOutput()
        #expect(codes(out) == [421], "\(out)")
        #expect(h.delegate.aborts == 1)
    }

    @Test func withoutADrainTheDeadlineCallDoesNothing() {
        let h = ServerHarness()
        h.send("EHLO client.test\r\n")
        #expect(!h.session.drainDeadlinePassed().shouldClose)
        #expect(h.takeOutput().isEmpty)
        #expect(codes(h.send("NOOP\r\n")) == [250])
    }
}
