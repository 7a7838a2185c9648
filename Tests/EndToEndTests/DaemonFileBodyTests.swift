#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineEngine
import PeregrineIO

/// Bodies sent straight from the spool file (issue 18's zero-copy body): a
/// message received in its own wire form (CRLF lines, no leading dot, no
/// bare CR or LF) is spooled with the wire-form flag and, on a plain
/// connection and from `DeliveryBodyRange.defaultMinimumSize` bytes up,
/// sent with sendfile/splice from the segment; everything else is copied
/// and dot-stuffed as before. Either way a real peer (the Python recording
/// receiver) must get the bytes the injector sent, and `/metrics` says
/// which went from the file, on the stream's own loop or another's.
/// Scenarios 55 (bytes) and 56 (receiver closing mid-body): 127.P.55.x, 127.P.56.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonFileBodyTests {
    static let threshold = DeliveryBodyRange.defaultMinimumSize

    /// `count` bytes of CRLF lines (`fill`'s text, at most 76 bytes a line), the last line padded with 'y'.
    static func lines(_ count: Int, fill: (Int) -> String) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while count - out.count > 160 {
            out += Array(fill(i).utf8.prefix(76)) + [13, 10]
            i += 1
        }
        let room = count - out.count
        if room >= 2 { out += Array(repeating: UInt8(ascii: "y"), count: room - 2) + [13, 10] }
        return out
    }

    /// `content` with every other line ending in a bare LF (its CR made a '-'):
    /// only CRLF ends a DATA line, so the CRLF ones keep lines under 1000 bytes, and the last stays CRLF.
    static func bareLineFeeds(_ content: [UInt8]) -> [UInt8] {
        var out = content
        var line = 0
        for i in out.indices where out[i] == 13 && i + 2 < out.count {
            if line % 2 == 0 { out[i] = UInt8(ascii: "-") }
            line += 1
        }
        return out
    }

    /// One message as the client sends it: `content` dot-stuffed for the wire (the test's own stuffing).
    static func wire(_ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var atLineStart = true
        var previous: UInt8 = 0
        for b in content {
            if atLineStart && b == UInt8(ascii: ".") { out.append(b) }
            out.append(b)
            atLineStart = b == 10 && previous == 13   // only CRLF ends a line in DATA
            previous = b
        }
        if !atLineStart { out += [13, 10] }
        return out + Array(".\r\n".utf8)
    }

    /// What the receiver must get for `content`: bare CR and LF become CRLF (the copying path's normalisation).
    static func normalised(_ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < content.count {
            let b = content[i]
            if b == 13 {
                out += [13, 10]
                i += (i + 1 < content.count && content[i + 1] == 10) ? 2 : 1
                continue
            }
            if b == 10 { out += [13, 10] } else { out.append(b) }
            i += 1
        }
        return out
    }

    static func sendRaw(_ c: SinkTestClient, _ bytes: [UInt8]) throws {
        // SinkTestClient.send takes text; the bytes are sent as they are (ISO 8859-1 maps byte to scalar).
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SinkTestError("send failed: errno \(errno)") }
            off += n
        }
    }

    /// Injects `content` to `rcpts`; nil when accepted.
    static func inject(_ c: SinkTestClient, _ rcpts: [String], _ content: [UInt8], mailParams: String = "") throws -> String? {
        guard try c.command("MAIL FROM:<files@peregrine.test>\(mailParams)")?.code == 250 else { return "MAIL refused" }
        for rcpt in rcpts { guard try c.command("RCPT TO:<\(rcpt)>")?.code == 250 else { return "RCPT \(rcpt) refused" } }
        guard try c.command("DATA")?.code == 354 else { return "DATA refused" }
        try sendRaw(c, wire(content))
        let r = try c.reply()
        return r?.code == 250 ? nil : "DATA: \(String(describing: r))"
    }

    static func metric(_ d: DaemonProcess, _ name: String) -> Int? {
        guard let data = try? E2E.httpGet(d.management, "/metrics") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            .flatMap { Double($0.split(separator: " ").last ?? "").map { Int($0) } }
    }

    /// The loop that owns a queue (`Daemon.owner(of:asking:)`: FNV-1a of "domain/vmta", modulo the loops).
    static func ownerLoop(_ queue: String, loops: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in queue.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(h % UInt64(loops))
    }

    /// Two loops, and every message goes to two domains whose queues live on
    /// different loops: whichever loop took the injection (its spool stream),
    /// one of the two deliveries reads the body across loops (the range is
    /// made on the stream's loop and its descriptor handed back).
    @Test(arguments: BackendKind.testable)
    func everyBodyArrivesByteForByteAndWireFormOnesGoFromTheFile(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 55
        let domains = ["files.test", "other.test"]
        try #require(Self.ownerLoop("files.test/vmta1", loops: 2) != Self.ownerLoop("other.test/vmta1", loops: 2),
                     "the two domains' queues must be on different loops")
        let s = try DaemonEndToEndTests.Scenario("file-body", scenario, kind)
        let receiver = try RecordingReceiver(s.dir, ip: E2E.ip(scenario, kind, host: 1))
        defer { receiver.terminate() }
        let client = E2E.ip(scenario, kind, host: 2)
        // No Received header from this client: the spooled body is exactly what it sent,
        // so "exactly at the threshold" is a size the test controls.
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <source \(client)/32>
                always-allow-relaying yes
                default-virtual-mta vmta1
                add-received-header no
            </source>
            <domain files.test>
                route [\(receiver.ip)]:\(receiver.port)
            </domain>
            <domain other.test>
                route [\(receiver.ip)]:\(receiver.port)
            </domain>
            """), threads: 2)
        let big = 100 * 1024
        let eightBit = "caf\u{e9} na\u{ef}ve \u{fc}ber \u{f1} "
        let bodies: [(local: String, content: [UInt8], params: String, fromFile: Bool)] = [
            ("plain", Self.lines(big) { "line \($0) of a plain body, nothing to stuff here at all" }, "", true),
            ("dots", Self.lines(big) { $0 % 3 == 0 ? ".\($0) a leading dot" : $0 % 3 == 1 ? "..two" : "." }, "", false),
            ("barelf", Self.bareLineFeeds(Self.lines(big) { "bare \($0)" }), "", false),
            ("eightbit", Self.lines(big) { "\($0) \(eightBit)" }, " BODY=8BITMIME", true),
            ("exact", Self.lines(Self.threshold) { "exactly at the threshold \($0)" }, "", true),
            ("under", Self.lines(Self.threshold - 1) { "one byte under the threshold \($0)" }, "", false),
            ("empty", [], "", false),
        ]
        let sizes = ["exact": Self.threshold, "under": Self.threshold - 1, "empty": 0]
        for b in bodies { #expect(b.content.count == sizes[b.local] ?? big, "\(b.local): \(b.content.count) bytes") }
        let c = try SinkTestClient(d.listenIP, d.listenPort, from: client)
        try #require(try c.start()?.code == 220)
        try #require(try c.command("EHLO files-client.test")?.code == 250)
        for b in bodies {
            #expect(try Self.inject(c, domains.map { "\(b.local)@\($0)" }, b.content, mailParams: b.params) == nil, "\(b.local)")
        }
        _ = try? c.command("QUIT")
        let expected = bodies.count * domains.count
        let arrived = E2E.waitUntil(60, every: 0.2) { receiver.messages.count == expected }
        try #require(arrived, "\(receiver.messages.count) of \(expected) arrived\n\(s.diagnostics)")
        let byRcpt = Dictionary(receiver.messages.map { ($0.rcpts.first ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for b in bodies {
            for domain in domains {
                let rcpt = "\(b.local)@\(domain)"
                guard let m = byRcpt[rcpt] else { Issue.record("\(rcpt) did not arrive"); continue }
                let got = m.data.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }   // the receiver wrote ISO 8859-1
                let want = Self.normalised(b.content)
                #expect(got == want, "\(rcpt): \(got.count) bytes arrived, \(want.count) expected; first difference at \(zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, want.count))")
            }
        }
        let fromFile = bodies.filter(\.fromFile).count * domains.count
        #expect(Self.metric(d, "peregrine_bodies_sent_from_file_total") == fromFile,
                "\(String(describing: Self.metric(d, "peregrine_bodies_sent_from_file_total"))) bodies from the file, \(fromFile) expected")
        #expect(s.records.of(.delivered).count == expected, "\(s.diagnostics)")
    }

    /// A receiver that reads 8 KB of a 100 KB body sent from the file and
    /// closes: the attempt is deferred (a `t` record, the message still
    /// queued), nothing is delivered or lost, and the daemon keeps running.
    @Test(arguments: BackendKind.testable)
    func aReceiverClosingMidBodyDefersTheMessage(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 56
        let s = try DaemonEndToEndTests.Scenario("file-body-close", scenario, kind)
        let receiver = try FailingReceiver(s.dir, ip: E2E.ip(scenario, kind, host: 1), mode: .closeInBody)
        defer { receiver.terminate() }
        let client = E2E.ip(scenario, kind, host: 2)
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <source \(client)/32>
                always-allow-relaying yes
                default-virtual-mta vmta1
            </source>
            <domain closing.test>
                route [\(receiver.ip)]:\(receiver.port)
                max-smtp-out 1
                retry-after 1h
            </domain>
            """), threads: 1)
        let c = try SinkTestClient(d.listenIP, d.listenPort, from: client)
        try #require(try c.start()?.code == 220)
        try #require(try c.command("EHLO files-client.test")?.code == 250)
        let content = Self.lines(100 * 1024) { "a body the receiver stops reading \($0)" }
        #expect(try Self.inject(c, ["gone@closing.test"], content) == nil)
        _ = try? c.command("QUIT")
        let deferred = E2E.waitUntil(60, every: 0.2) { s.records.of(.transient).contains { $0.rcpt == "gone@closing.test" } }
        #expect(deferred, "no t record: connections \(receiver.connections)\n\(s.diagnostics)")
        #expect(Self.metric(d, "peregrine_bodies_sent_from_file_total") == 1, "the body went from the file")
        #expect(s.records.finals.isEmpty, "nothing delivered or bounced: \(s.records.finals.map(\.rcpt))")
        let q = try #require(try d.queues()[queueName("closing.test")])
        #expect((q["ready"] as? Int ?? 0) + (q["delayed"] as? Int ?? 0) == 1, "the message is still queued: \(q)")
    }
}
