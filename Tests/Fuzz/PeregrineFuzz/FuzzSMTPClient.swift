// Fuzz target: the SMTP client session reading a hostile receiver's
// replies. Run by scripts/fuzz.
//
// Input: byte 0 the chunk size, byte 1 the number of recipients; the rest is
// what the "server" says. The owner behaves as the delivery connection does:
// sends an envelope whenever the session is ready, streams a small body when
// asked, and answers STARTTLS with a failed handshake. Oracles besides "no
// crash": every message that was sent is completed exactly once with one
// result per recipient, and nothing is reported after `.closed`.
import PeregrineIO
import PeregrineSMTP


func fuzzSMTPClient(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let session = SMTPClientSession(configuration: SMTPClientConfiguration(heloName: "mta.example"))
    let recipients = (0..<(Int(input[1] % 5) + 1)).map { "user\($0)@example.com" }
    var out = ByteBuffer(capacity: 256)
    var sent = 0, completed = 0, closed = false
    let body: [UInt8] = Array("Subject: t\r\n\r\n.leading dot\r\nline\r\n".utf8)

    func pump() {
        while let event = session.nextEvent() {
            precondition(!closed, "event after .closed: \(event)")
            switch event {
            case .ready:
                if sent < 3, session.send(SMTPClientEnvelope(mailFrom: "a@example.org", recipients: recipients, size: body.count)) {
                    sent += 1
                }
            case .sendBody:
                session.appendBody(body)
                session.finishBody()
            case .startTLS(let reply):
                if reply.code == 220 { session.tlsFailed("fuzz: no TLS") }
            case .messageCompleted(let result):
                completed += 1
                precondition(completed <= sent, "more completions than messages")
                precondition(result.recipients.count == recipients.count, "result without one reply per recipient")
            case .closed:
                closed = true
            case .setTimer, .cancelTimer:
                break
            }
        }
        session.swapOutput(&out)
    }

    session.start()
    pump()
    let chunk = Int(input[0] % 64) + 1
    var offset = 2
    while offset < size && !closed {
        let end = min(size, offset + chunk)
        session.receive(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(input)[offset..<end]))
        pump()
        offset = end
    }
    if !closed { session.connectionClosed(); pump() }
    precondition(closed, "connectionClosed did not close the session")
    precondition(completed == sent, "a sent message was never completed: \(sent) sent, \(completed) completed")
    return 0
}
