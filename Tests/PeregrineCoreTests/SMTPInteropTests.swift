import Testing
import Foundation
import PeregrineTestSupport
import Synchronization
import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

// Interop of Peregrine's SMTP sessions and socket glue with software nobody
// here wrote: Python smtplib, swaks, Postfix smtp-source and smtp-sink. Every
// test runs on 127.0.0.1 with bounded time, for each I/O backend.

/// Counts what a Peregrine server received (written on the loop thread, read by the test).
final class InteropCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var _messages = 0
    private var _bodyBytes = 0
    private var _recipients = 0
    private var _connections = 0
    private var _eightBit = 0
    private var _auth = 0
    func add(messages: Int = 0, bytes: Int = 0, recipients: Int = 0, connections: Int = 0, eightBit: Int = 0, auth: Int = 0) {
        lock.lock(); _messages += messages; _bodyBytes += bytes; _recipients += recipients
        _connections += connections; _eightBit += eightBit; _auth += auth; lock.unlock()
    }
    var messages: Int { lock.lock(); defer { lock.unlock() }; return _messages }
    var recipients: Int { lock.lock(); defer { lock.unlock() }; return _recipients }
    var connections: Int { lock.lock(); defer { lock.unlock() }; return _connections }
    var eightBit: Int { lock.lock(); defer { lock.unlock() }; return _eightBit }
    var auth: Int { lock.lock(); defer { lock.unlock() }; return _auth }
    var bodyBytes: Int { lock.lock(); defer { lock.unlock() }; return _bodyBytes }
}

/// The owner of one server session: accepts everything, checks AUTH, counts.
final class CountingPolicy: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    let counters: InteropCounters
    var bytes = 0
    var eightBit = false
    init(counters: InteropCounters) { self.counters = counters }
    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        switch request {
        case .mailFrom(let m):
            eightBit = m.body == .eightBitMIME
        case .auth(let c):
            guard c.username == "user" && c.password == "secret" else { return .reply(SMTPReply(535, "5.7.8", "bad credentials")) }
            counters.add(auth: 1)
        case .endOfData(let info):
            counters.add(messages: 1, bytes: info.size, recipients: session.transaction.recipients.count, eightBit: eightBit ? 1 : 0)
        default: break
        }
        return .accept
    }
}


/// Waits (bounded) until `condition` holds; the server counts on its own thread.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline { if condition() { return true }; usleep(10_000) }
    return condition()
}

/// A backend that cannot start here (old kernel) is reported, not failed.
func withServer(_ kind: BackendKind, _ config: SMTPServerConfiguration,
                _ body: (UInt16, InteropCounters) throws -> Void) throws {
    func open<L: EventLoop>(_ type: L.Type) throws {
        let counters = InteropCounters()
        let server: PeregrineTestServer<L>
        do {
            server = try PeregrineTestServer<L>(.init(configuration: config)) { _ in
                counters.add(connections: 1)
                return CountingPolicy(counters: counters)
            }
        } catch let e as IOError {
            if case .unsupported = e.kind { try Skip.because("the \(L.kind) backend cannot start here: \(e)") }
            throw e
        }
        defer { server.stop() }
        #expect(server.port != 0)
        try body(server.port, counters)
    }
    try open(kind.loopType)
}

let smtplibScript = #"""
import smtplib, socket, sys
port = int(sys.argv[1])
n = 0
# 1. ESMTP, several messages on one connection, 8BITMIME, AUTH PLAIN.
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("py.example")
assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("auth"), s.esmtp_features
s.login("user", "secret")
for i in range(20):
    body = ("Subject: m%d\r\n\r\n.leading dot\r\nh\u00e9llo w\u00f6rld\r\n" % i).encode("utf-8")
    refused = s.sendmail("from@py.example", ["a@rcpt.example", "b@rcpt.example"], body, mail_options=["BODY=8BITMIME"])
    assert refused == {}, refused
    n += 1
# A second AUTH gets 503 (smtplib counts 503 as "already authenticated").
code, _ = s.docmd("AUTH", "PLAIN AHVzZXIAc2VjcmV0")
assert code == 503, code
s.quit()
# 2. Wrong password is refused.
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
try:
    s.login("user", "wrong"); raise SystemExit("bad password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
s.quit()
# 3. Plain HELO, no ESMTP.
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.helo("old.example")
s.sendmail("from@py.example", ["c@rcpt.example"], b"Subject: helo\r\n\r\nplain\r\n")
n += 1
s.quit()
# 4. Hand-made pipelining: one write for two whole transactions.
c = socket.create_connection(("127.0.0.1", port), timeout=20)
f = c.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline()
        lines.append(l)
        if l[3:4] != b"-":
            return int(l[:3]), lines
assert reply()[0] == 220
c.sendall(b"EHLO pipe.example\r\n")
assert reply()[0] == 250
c.sendall(b"MAIL FROM:<p@x>\r\nRCPT TO:<q@y>\r\nRCPT TO:<r@y>\r\nDATA\r\n")
assert [reply()[0] for _ in range(4)] == [250, 250, 250, 354]
c.sendall(b"pipelined\r\n..dot\r\n.\r\nMAIL FROM:<p@x>\r\nRCPT TO:<q@y>\r\nDATA\r\n")
assert [reply()[0] for _ in range(4)] == [250, 250, 250, 354]
c.sendall(b"second\r\n.\r\nQUIT\r\n")
assert [reply()[0] for _ in range(2)] == [250, 221]
n += 2
print("SENT", n)
"""#

@Suite("SMTP interop", .serialized, .timeLimit(.minutes(10)), .blockingIO)
struct SMTPInteropTests {
    @Test(arguments: BackendKind.testable)
    func pythonSmtplibAgainstPeregrineServer(kind: BackendKind) throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        var config = SMTPServerConfiguration(hostname: "mx.peregrine.test")
        config.authEnabled = true
        config.allowUnencryptedAuth = true   // these peers log in over plain TCP on loopback
        try withServer(kind, config) { port, counters in
            let (status, output) = runTool(python, ["-c", smtplibScript, String(port)], seconds: 60)
            #expect(status == 0, "\(output)")
            #expect(output.contains("SENT 23"))
            #expect(eventually { counters.messages == 23 })
            #expect(counters.eightBit == 20)
            #expect(counters.auth == 1)
            #expect(counters.recipients == 20 * 2 + 1 + 2 + 1)
        }
    }

    @Test(arguments: BackendKind.testable)
    func swaksAgainstPeregrineServer(kind: BackendKind) throws {
        let swaks = try #require(findTool("swaks"), "swaks is not installed (scripts/setup installs it)")
        var config = SMTPServerConfiguration(hostname: "mx.peregrine.test")
        config.authEnabled = true
        config.allowUnencryptedAuth = true   // these peers log in over plain TCP on loopback
        try withServer(kind, config) { port, counters in
            let server = "127.0.0.1:\(port)"
            let plain = runTool(swaks, ["--server", server, "--from", "a@x.example", "--to", "b@y.example", "--helo", "swaks.example"], seconds: 30)
            #expect(plain.0 == 0, "\(plain.1)")
            let pipe = runTool(swaks, ["--server", server, "--from", "a@x.example", "--to", "b@y.example,c@y.example", "--pipeline"], seconds: 30)
            #expect(pipe.0 == 0, "\(pipe.1)")
            let auth = runTool(swaks, ["--server", server, "--from", "a@x.example", "--to", "b@y.example", "--auth", "PLAIN",
                                       "--auth-user", "user", "--auth-password", "secret"], seconds: 30)
            #expect(auth.0 == 0, "\(auth.1)")
            #expect(eventually { counters.messages == 3 })
            #expect(counters.recipients == 4)
            #expect(counters.auth == 1)
        }
    }

    @Test(arguments: BackendKind.testable)
    func postfixSmtpSourceAgainstPeregrineServer(kind: BackendKind) throws {
        let source = try #require(findTool("smtp-source"), "smtp-source is not installed (scripts/setup installs it)")
        try withServer(kind, SMTPServerConfiguration(hostname: "mx.peregrine.test")) { port, counters in
            let target = "127.0.0.1:\(port)"
            // 2000 messages over 10 concurrent reused connections.
            let a = runTool(source, ["-d", "-s", "10", "-m", "2000", "-l", "2048", "-f", "from@src.example", "-t", "to@dst.example", target], seconds: 120)
            #expect(a.0 == 0, "\(a.1)")
            #expect(eventually(30) { counters.messages == 2000 })
            // 500 messages, one connection each, 2 recipients each.
            let b = runTool(source, ["-s", "20", "-m", "500", "-r", "2", "-l", "512", "-f", "from@src.example", "-t", "to@dst.example", target], seconds: 120)
            #expect(b.0 == 0, "\(b.1)")
            #expect(eventually(30) { counters.messages == 2500 })
            #expect(counters.recipients == 2000 + 1000)
            #expect(counters.connections >= 510)
        }
    }

    @Test(arguments: BackendKind.testable)
    func peregrineClientAgainstPostfixSmtpSink(kind: BackendKind) throws {
        let sink = try #require(findTool("smtp-sink"), "smtp-sink is not installed (scripts/setup installs it)")
        try kind.requireAvailable()
        // An address of this test process's own: the port is free by construction,
        // and a connection there can only reach this smtp-sink.
        let ip = interopAddress(130, kind), port: UInt16 = 2525
        // smtp-sink answers every command; runs until killed.
        let sinkProcess = Process()
        sinkProcess.executableURL = URL(fileURLWithPath: sink)
        sinkProcess.arguments = ["-u", "nobody", "\(ip):\(port)", "64"]
        sinkProcess.standardOutput = FileHandle.nullDevice
        sinkProcess.standardError = FileHandle.nullDevice
        try ChildProcess.run(sinkProcess)
        defer { kill(sinkProcess.processIdentifier, SIGKILL); sinkProcess.waitUntilExit() }
        try #require(PrivateLoopback.waitForListener(ip, port, process: sinkProcess), "smtp-sink is not listening on \(ip):\(port)")
        try deliverToSink(kind.loopType, ip: ip, port: port)
    }

    /// Peregrine's client → a real Postfix smtpd (private instance) → relayed on to a
    /// Peregrine server that counts: every message accepted by Postfix arrives.
    @Test(arguments: BackendKind.testable)
    func peregrineClientAgainstPostfixSmtpd(kind: BackendKind) throws {
        _ = try #require(findTool("postfix"), "postfix is not installed (scripts/setup installs it)")
        try #require(getuid() == 0, "a private Postfix instance needs root")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/postfix-instance").path
        try withServer(kind, SMTPServerConfiguration(hostname: "counter.peregrine.test")) { counterPort, counters in
            let dir = NSTemporaryDirectory() + "peregrine-postfix-\(getpid())-\(kind.rawValue)"
            let ip = interopAddress(131, kind), smtpdPort: UInt16 = 2525
            let (status, output) = runTool("/bin/bash", [script, "start", dir, "\(ip):\(smtpdPort)", "127.0.0.1:\(counterPort)"])
            defer {
                _ = runTool("/bin/bash", [script, "stop", dir])
                try? FileManager.default.removeItem(atPath: dir)
            }
            try #require(status == 0, "postfix did not start: \(output)")
            try #require(PrivateLoopback.waitForListener(ip, smtpdPort, seconds: 20), "postfix smtpd is not listening on \(ip):\(smtpdPort)")
            try deliverToSink(kind.loopType, ip: ip, port: smtpdPort, connections: 4, perConnection: 50)
            // Postfix queued every message durably; it relays all 200 (2 recipients each) to the counter.
            #expect(eventually(90) { counters.messages >= 200 }, "relayed \(counters.messages) of 200")
            #expect(counters.recipients == 400, "recipients \(counters.recipients)")
        }
    }
}

/// A loopback address of this test process's own for one interop scenario and backend.
func interopAddress(_ scenario: Int, _ kind: BackendKind, file: String = #fileID) -> String {
    PrivateLoopback.address(scenario, (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1, file: file)
}

func deliverToSink<L: EventLoop>(_ type: L.Type, ip: String, port: UInt16, connections: Int = 4, perConnection: Int = 250) throws {
            let loop: L
            do { loop = try L() } catch {
                if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
                throw error
            }
            let done = DispatchSemaphore(value: 0)
            let finished = DispatchSemaphore(value: 0)
            let t = Thread { loop.run(); finished.signal() }
            t.start()
            let results = Unchecked(NSMutableArray())
            let reasons = Unchecked(NSMutableArray())
            let box = Unchecked(loop)
            loop.execute {
                let loop = box.value
                var open = connections
                for c in 0..<connections {
                    let conn = SMTPMessageListClient(loop: loop, configuration: SMTPClientConfiguration(heloName: "client\(c).peregrine.test"))
                    var left = perConnection
                    conn.nextMessage = {
                        guard left > 0 else { return nil }
                        left -= 1
                        let body = Array("Subject: n\(left)\n\n.dot line\nbody of message \(left)\n".utf8)
                        return SMTPOutgoingMessage(envelope: SMTPClientEnvelope(mailFrom: "s@peregrine.test", recipients: ["r1@sink.test", "r2@sink.test"], size: body.count), body: body)
                    }
                    conn.onResult = { r in results.value.add(r.deliveredCount) }
                    conn.onClose = { why in
                        reasons.value.add("\(why)")
                        open -= 1
                        if open == 0 { done.signal() }
                    }
                    conn.connect(to: try! SocketAddress(ip: ip, port: port), from: try! SocketAddress(ip: "127.0.0.1", port: 0))
                }
            }
            let ok = done.wait(timeout: .now() + 60) == .success
            loop.stop()
            _ = finished.wait(timeout: .now() + 10)
            #expect(ok)
            #expect(results.value.count == connections * perConnection)
            #expect(results.value.allSatisfy { ($0 as? Int) == 2 })
            #expect(reasons.value.count == connections)
            #expect(reasons.value.allSatisfy { ($0 as? String)?.hasPrefix("quit(") == true }, "\(reasons.value)")
        }
