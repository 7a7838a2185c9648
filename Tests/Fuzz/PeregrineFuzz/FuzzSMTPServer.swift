// Fuzz target: the SMTP server session, fed hostile bytes as a peer
// would send them. Run by scripts/fuzz.
//
// Input: byte 0 picks the owner's policy (accept, answer later, refuse
// recipients, 421 at MAIL), byte 1 the chunk size the rest is cut into, so
// every split point of a pipelined batch is reached. Oracles besides "no
// crash": every output line is a well-formed reply (`DDD ` or `DDD-`, CRLF),
// continuation lines keep their code, output per batch is bounded by the
// lines received (no amplification), and a closed session writes nothing.
import PeregrineIO
import PeregrineSMTP

final class FuzzOwner: SMTPServerSessionDelegate {
    let policy: UInt8
    var pending = false
    var bodyBytes = 0
    init(policy: UInt8) { self.policy = policy }

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        switch (policy % 4, request) {
        case (1, _): pending = true; return .pending
        case (2, .rcptTo): return .reply(SMTPReply(550, "5.1.1", "no such user"))
        case (3, .mailFrom): return .reply(SMTPReply(421, "4.7.0", "try later"))
        default: return .accept
        }
    }
    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        bodyBytes += chunk.count
    }
    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) { bodyBytes = 0 }
}

/// Checks that `bytes` is a sequence of complete SMTP reply lines.
func checkReplies(_ bytes: [UInt8]) {
    var lineStart = 0
    var continuingCode: ArraySlice<UInt8>? = nil
    for i in bytes.indices where bytes[i] == 10 {
        let line = bytes[lineStart...i]
        lineStart = i + 1
        precondition(line.count >= 6, "reply line too short: \(line.count)")
        precondition(line[line.endIndex - 2] == 13, "reply line without CRLF")
        let code = line.prefix(3)
        precondition(code.allSatisfy { $0 >= 48 && $0 <= 57 } && (50...53).contains(code.first!), "bad reply code")
        let separator = line[line.startIndex + 3]
        precondition(separator == 32 || separator == 45, "bad separator after code")
        if let c = continuingCode { precondition(c.elementsEqual(code), "continuation changed code") }
        continuingCode = separator == 45 ? code : nil
        precondition(!line.dropLast(2).contains(13), "bare CR inside a reply line")
    }
    precondition(lineStart == bytes.count, "partial reply line in output")
    precondition(continuingCode == nil, "multi-line reply left open")
}


func fuzzSMTPServer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    var configuration = SMTPServerConfiguration()
    configuration.maxMessageSize = 4096
    configuration.maxRecipients = 8
    let owner = FuzzOwner(policy: input[0])
    let session = SMTPServerSession(configuration: configuration, delegate: owner)
    var out = ByteBuffer(capacity: 256)
    var written: [UInt8] = []
    func drain(linesIn: Int) {
        session.swapOutput(&out)
        let bytes = out.readableBytesArray
        // One reply per command line, each at most a few hundred bytes (EHLO
        // is the longest), plus the greeting and a closing 421.
        precondition(bytes.count <= (linesIn + 2) * 1024, "output amplification: \(bytes.count) bytes for \(linesIn) lines")
        written += bytes
    }
    session.start()
    drain(linesIn: 0)
    let chunk = Int(input[1] % 64) + 1
    var offset = 2
    while offset < size {
        let end = min(size, offset + chunk)
        let piece = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(input)[offset..<end])
        let wasClosed = session.isClosed
        session.receive(piece)
        if owner.pending && session.isAwaitingDecision {
            owner.pending = false
            session.decide(.accept)
        }
        let lines = piece.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
        drain(linesIn: lines + 1)
        if wasClosed { precondition(out.isEmpty, "closed session wrote output") }
        offset = end
    }
    session.timedOut()
    drain(linesIn: 1)
    checkReplies(written)
    return 0
}
