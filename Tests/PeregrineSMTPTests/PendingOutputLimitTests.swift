import PeregrineSMTP
import Testing

// Issue 12 item 1: a client that pipelines without reading its replies.
// The session stops processing commands once `maxPendingOutput` reply bytes
// wait; the rest of the input is held until the owner takes the output and
// calls `processBufferedInput()`. Nothing is lost or reordered.
@Suite struct PendingOutputLimitTests {
    /// Feeds `script` in two parts (split at `split`), and drains like a
    /// connection does: take the output, then let the session go on.
    /// Returns everything written and the largest output seen at once.
    static func run(_ script: [UInt8], split: Int, _ configuration: SMTPServerConfiguration) -> (String, Int, RecordingDelegate) {
        let h = ServerHarness(configuration)
        var all = ""
        var peak = 0
        func drain() {
            while true {
                peak = max(peak, h.session.output.readableBytes)
                let out = h.takeOutput()
                all += out
                h.session.processBufferedInput()
                if out.isEmpty && h.session.output.isEmpty { return }
            }
        }
        for part in [Array(script[..<split]), Array(script[split...])] where !part.isEmpty {
            h.session.receive(part)
            drain()
        }
        return (all, peak, h.delegate)
    }

    @Test func megabytesOfPipelinedNOOPsNeverFillTheOutputBeyondTheLimit() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxPendingOutput = 4096
        let h = ServerHarness(c)
        let noops = 200_000 // 1.2 MB of NOOP, 2.8 MB of replies
        let input = bytes(String(repeating: "NOOP\r\n", count: noops))
        h.session.receive(input)
        #expect(h.session.isOutputFull)
        #expect(h.session.output.readableBytes <= c.maxPendingOutput + SMTPServerSession.longestOwnReply)
        #expect(h.session.bufferedInputBytes > input.count - 4096)
        // Receiving more while full only buffers it.
        h.session.receive(bytes("NOOP\r\n"))
        #expect(h.session.output.readableBytes <= c.maxPendingOutput + SMTPServerSession.longestOwnReply)
        var replies = 0
        var rounds = 0
        while true {
            let out = h.takeOutput()
            replies += codes(out).count
            #expect(codes(out).allSatisfy { $0 == 250 })
            h.session.processBufferedInput()
            #expect(h.session.output.readableBytes <= c.maxPendingOutput + SMTPServerSession.longestOwnReply)
            rounds += 1
            if h.session.output.isEmpty { break }
        }
        #expect(replies == noops + 1)
        #expect(h.session.bufferedInputBytes == 0)
        #expect(rounds > 100)
    }

    @Test func heldInputIsProcessedInOrderWhereverTheBytesSplit() {
        let script = bytes("EHLO c\r\n" + String(repeating: "NOOP\r\nHELP\r\n", count: 20)
                           + "MAIL FROM:<s@x.org>\r\nRCPT TO:<r@y.org>\r\nDATA\r\nline1\r\n.stuffed\r\n.\r\n"
                           + String(repeating: "RSET\r\n", count: 10) + "QUIT\r\n")
        let reference = ServerHarness()
        let refOut = reference.send(script)
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxPendingOutput = 100
        for i in 0...script.count {
            let (out, peak, delegate) = Self.run(script, split: i, c)
            #expect(out == refOut, "split at \(i)")
            #expect(delegate.bodies == reference.delegate.bodies, "split at \(i)")
            #expect(peak <= c.maxPendingOutput + SMTPServerSession.longestOwnReply, "split at \(i)")
        }
    }

    @Test func aPendingDecisionStillHoldsInputWhileTheOutputIsFull() {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.maxPendingOutput = 64
        let h = ServerHarness(c, decide: { r in if case .mailFrom = r { return .pending } else { return .accept } })
        h.session.receive(bytes("EHLO c\r\nMAIL FROM:<a@b>\r\nNOOP\r\nNOOP\r\n"))
        // The EHLO reply alone is over 64 bytes: MAIL waits until the output is taken.
        #expect(h.session.isOutputFull)
        #expect(!h.session.isAwaitingDecision)
        #expect(codes(h.takeOutput()) == [250])
        h.session.processBufferedInput()
        #expect(h.session.isAwaitingDecision)
        h.session.decide(.accept)
        #expect(codes(h.takeOutput()) == [250, 250, 250])
        #expect(h.session.bufferedInputBytes == 0)
    }
}
