import PeregrineSMTP
import PeregrineIO

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

/// Records everything a server session tells its owner; answers per a script.
final class RecordingDelegate: SMTPServerSessionDelegate {
    var requests: [SMTPServerRequest] = []
    var body: [UInt8] = []
    var bodies: [[UInt8]] = []
    var aborts = 0
    var decide: (SMTPServerRequest) -> SMTPServerDecision = { _ in .accept }

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        requests.append(request)
        if case .endOfData = request { bodies.append(body); body = [] }
        return decide(request)
    }
    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        body.append(contentsOf: chunk)
    }
    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) {
        aborts += 1
        body = []
    }
}

/// A started server session with its delegate; `send` returns the reply bytes it produced.
struct ServerHarness {
    let session: SMTPServerSession
    let delegate: RecordingDelegate
    var greeting: String

    init(_ config: SMTPServerConfiguration = SMTPServerConfiguration(hostname: "mx.test"),
         decide: @escaping (SMTPServerRequest) -> SMTPServerDecision = { _ in .accept }) {
        delegate = RecordingDelegate()
        delegate.decide = decide
        session = SMTPServerSession(configuration: config, delegate: delegate)
        session.start()
        var out = ByteBuffer()
        session.swapOutput(&out)
        greeting = text(out.readableBytesArray)
    }

    @discardableResult
    func send(_ s: String) -> String { send(bytes(s)) }

    @discardableResult
    func send(_ b: [UInt8]) -> String {
        session.receive(b)
        return takeOutput()
    }

    func takeOutput() -> String {
        var out = ByteBuffer()
        session.swapOutput(&out)
        return text(out.readableBytesArray)
    }
}

/// Reply codes in order from a server's output ("250 2.1.0 Ok\r\n354 …" → [250, 354]).
func codes(_ output: String) -> [Int] {
    var p = SMTPReplyParser()
    p.feed(bytes(output))
    var result: [Int] = []
    while let r = p.next() { if case .success(let reply) = r { result.append(reply.code) } }
    return result
}

func replies(_ output: String) -> [SMTPReply] {
    var p = SMTPReplyParser()
    p.feed(bytes(output))
    var result: [SMTPReply] = []
    while let r = p.next() { if case .success(let reply) = r { result.append(reply) } }
    return result
}

/// Deterministic PRNG (SplitMix64) for fuzz tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
