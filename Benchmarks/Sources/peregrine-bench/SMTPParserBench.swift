import Foundation
import PeregrineSMTP
import PeregrineIO

/// `peregrine-bench smtp-parser`: throughput of the sans-I/O SMTP server
/// session with no sockets: pipelined commands per second, and MB/s of DATA
/// through dot-unstuffing (server session) and dot-stuffing (DotStuffer).
private let smtpParserUsage = """
usage: peregrine-bench smtp-parser [--seconds S] [--output FILE]
  --seconds S    time per measurement (default 3)
  --output FILE  JSON path (default results/smtp-parser-<YYYY-MM-DD>.json)
"""

private final class NullDelegate: SMTPServerSessionDelegate {
    var bytes = 0
    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) { bytes &+= chunk.count }
}

private func measure(seconds: Double, _ round: () -> Int) -> (units: Int, elapsed: Double) {
    var units = 0
    let start = DispatchTime.now().uptimeNanoseconds
    var now = start
    while Double(now - start) / 1e9 < seconds {
        units += round()
        now = DispatchTime.now().uptimeNanoseconds
    }
    return (units, Double(now - start) / 1e9)
}

func runSMTPParserBench(arguments: [String]) -> Int32 {
    var seconds = 3.0
    var output: String?
    var i = 0
    while i < arguments.count {
        switch arguments[i] {
        case "--seconds" where i + 1 < arguments.count: seconds = Double(arguments[i + 1]) ?? seconds; i += 2
        case "--output" where i + 1 < arguments.count: output = arguments[i + 1]; i += 2
        case "-h", "--help": print(smtpParserUsage); return 0
        default: fputs("unknown argument \(arguments[i])\n\(smtpParserUsage)\n", stderr); return 2
        }
    }

    // 1. Commands: a pipelined batch of 100 transactions' envelopes (MAIL, 2×RCPT, RSET) = 400 commands.
    var batch: [UInt8] = []
    for n in 0..<100 {
        batch += Array("MAIL FROM:<sender\(n)@example.com> SIZE=4096 BODY=8BITMIME\r\nRCPT TO:<a\(n)@example.net> NOTIFY=FAILURE\r\nRCPT TO:<b\(n)@example.net>\r\nRSET\r\n".utf8)
    }
    let delegate = NullDelegate()
    var config = SMTPServerConfiguration(hostname: "bench.test")
    config.maxErrors = Int.max
    var out = ByteBuffer(capacity: 65536)
    let commands = measure(seconds: seconds) {
        let s = SMTPServerSession(configuration: config, delegate: delegate)
        s.start()
        s.receive(Array("EHLO bench\r\n".utf8))
        batch.withUnsafeBytes { _ = s.receive($0) }
        s.swapOutput(&out)
        return 400
    }
    let commandsPerSecond = Double(commands.units) / commands.elapsed

    // 2. DATA: a 1 MiB body of 78-char lines, 1 in 10 starting with a dot, fed in 64 KiB reads.
    var body: [UInt8] = []
    var line = 0
    while body.count < 1 << 20 {
        if line % 10 == 0 { body.append(UInt8(ascii: ".")) }
        body += Array(repeating: UInt8(ascii: "x"), count: 77)
        body += [13, 10]
        line += 1
    }
    var stuffed = ByteBuffer(capacity: body.count + body.count / 20)
    var stuffer = DotStuffer()
    stuffer.stuff(body, into: &stuffed)
    stuffer.finish(into: &stuffed)
    let wire = stuffed.readableBytesArray
    config.maxMessageSize = 1 << 30
    let unstuff = measure(seconds: seconds) {
        let s = SMTPServerSession(configuration: config, delegate: delegate)
        s.start()
        s.receive(Array("EHLO b\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".utf8))
        wire.withUnsafeBytes { w in
            var off = 0
            while off < w.count {
                let n = min(65536, w.count - off)
                s.receive(UnsafeRawBufferPointer(rebasing: w[off..<(off + n)]))
                off += n
            }
        }
        s.swapOutput(&out)
        return wire.count
    }
    let unstuffMBps = Double(unstuff.units) / unstuff.elapsed / 1e6

    // 3. Client side: dot-stuffing into a reused buffer.
    let stuff = measure(seconds: seconds) {
        stuffed.clear()
        var st = DotStuffer()
        st.stuff(body, into: &stuffed)
        st.finish(into: &stuffed)
        return body.count
    }
    let stuffMBps = Double(stuff.units) / stuff.elapsed / 1e6

    print("smtp-parser: \(Int(commandsPerSecond)) commands/s (pipelined MAIL/RCPT/RCPT/RSET)")
    print("smtp-parser: \(String(format: "%.1f", unstuffMBps)) MB/s DATA through the server session (dot-unstuffing)")
    print("smtp-parser: \(String(format: "%.1f", stuffMBps)) MB/s dot-stuffing (client side)")

    let date = BenchEnvironment.today()
    let path = output ?? "results/smtp-parser-\(date).json"
    #if DEBUG
    let build = "debug"
    #else
    let build = "release"
    #endif
    let doc: [String: Any] = [
        "benchmark": "smtp-parser",
        "date": date,
        "build": build,
        "commit": BenchEnvironment.gitCommit(),
        "machine": BenchEnvironment.machine(),
        "parameters": ["secondsPerMeasurement": seconds, "bodyBytes": body.count, "readSize": 65536, "commandsPerBatch": 400],
        "results": [
            "commandsPerSecond": Int(commandsPerSecond),
            "dataUnstuffMBps": (unstuffMBps * 10).rounded() / 10,
            "dataStuffMBps": (stuffMBps * 10).rounded() / 10,
        ],
    ]
    guard BenchEnvironment.writeJSON(doc, to: path) else {
        fputs("cannot write \(path)\n", stderr)
        return 1
    }
    print("wrote \(path)")
    return 0
}
