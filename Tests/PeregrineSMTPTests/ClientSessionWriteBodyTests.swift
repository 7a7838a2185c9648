import Testing
import PeregrineSMTP
import PeregrineIO

/// `writeBody`: the body dot-stuffed into memory the owner provides (its
/// send buffer) gives the same wire bytes as `appendBody` + `finishBody`.
@Suite struct ClientSessionWriteBodyTests {
    /// A session that has just emitted `.sendBody` (pipelined, one recipient accepted).
    func sessionAtBody() throws -> SMTPClientSession {
        let session = SMTPClientSession(configuration: SMTPClientConfiguration(heloName: "out.example"))
        session.start()
        session.receive(bytes("220 mx.test ESMTP\r\n"))
        session.receive(bytes(ehloFull))
        #expect(session.send(SMTPClientEnvelope(mailFrom: "s@x.org", recipients: ["a@y"])))
        session.receive(bytes("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"))
        var sawSendBody = false
        while let e = session.nextEvent() { if e == .sendBody { sawSendBody = true } }
        try #require(sawSendBody)
        var drained = ByteBuffer()
        session.swapOutput(&drained)
        return session
    }

    func viaOutput(_ body: [UInt8]) throws -> [UInt8] {
        let session = try sessionAtBody()
        session.appendBody(body)
        session.finishBody()
        var out = ByteBuffer()
        session.swapOutput(&out)
        return out.readableBytesArray
    }

    @Test func writesTheSameBytesAsAppendBodyAndFinishes() throws {
        let body = bytes("Subject: t\r\n\r\n.hello\nworld\r.\r\nend")
        let session = try sessionAtBody()
        let capacity = session.writeBodyCapacity(forChunk: body.count)
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity + 3, alignment: 1)
        defer { memory.deallocate() }
        // Start past a prefix the owner already holds: the body lands at the slice's start.
        let room = UnsafeMutableRawBufferPointer(rebasing: memory[3...])
        let n = body.withUnsafeBytes { session.writeBody($0, last: true, into: room) }
        let wire = Array(UnsafeRawBufferPointer(rebasing: room[0..<n]))
        #expect(text(wire) == "Subject: t\r\n\r\n..hello\r\nworld\r\n..\r\nend\r\n.\r\n")
        #expect(wire == (try viaOutput(body)))
        #expect(session.output.isEmpty)
        // The session went on to wait for the final reply and completes the message on it.
        var timers: [SMTPClientPhase] = []
        while let e = session.nextEvent() { if case .setTimer(let p, _) = e { timers.append(p) } }
        #expect(timers == [.dataEnd])
        session.receive(bytes("250 2.0.0 queued\r\n"))
        var delivered = 0
        while let e = session.nextEvent() { if case .messageCompleted(let r) = e { delivered = r.deliveredCount } }
        #expect(delivered == 1)
        #expect(session.isReady)
    }

    @Test func pendingOutputGoesFirstAndChunksJoin() throws {
        let session = try sessionAtBody()
        // Bytes the owner has not taken yet (here: written by the harness itself) precede the body.
        session.appendBody(bytes("first line\r\n"))
        let parts = [bytes("a\r"), bytes("\n.b"), bytes("\n")]
        var wire: [UInt8] = []
        for (i, part) in parts.enumerated() {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: session.writeBodyCapacity(forChunk: part.count), alignment: 1)
            defer { memory.deallocate() }
            let n = part.withUnsafeBytes { session.writeBody($0, last: i == parts.count - 1, into: memory) }
            wire += Array(UnsafeRawBufferPointer(rebasing: memory[0..<n]))
        }
        #expect(text(wire) == "first line\r\na\r\n..b\r\n.\r\n")
    }

    @Test func tooSmallDestinationFallsBackToOutput() throws {
        let body = bytes("x\ny")
        let session = try sessionAtBody()
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 1)
        defer { memory.deallocate() }
        let n = body.withUnsafeBytes { session.writeBody($0, last: true, into: memory) }
        #expect(n == 0)
        #expect(text(session.output.readableBytesArray) == "x\r\ny\r\n.\r\n")
    }

    @Test func outsideTheBodyWritesNothing() {
        let session = SMTPClientSession(configuration: SMTPClientConfiguration(heloName: "out.example"))
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
        defer { memory.deallocate() }
        #expect(bytes("a").withUnsafeBytes { session.writeBody($0, last: true, into: memory) } == 0)
        #expect(session.output.isEmpty)
    }
}
