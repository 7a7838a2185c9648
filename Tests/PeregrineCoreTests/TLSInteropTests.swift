import Foundation
import PeregrineTestSupport
import PeregrineIO
import PeregrineSMTP
import Testing
import PeregrineTLS
import PeregrineTransport

// STARTTLS and implicit TLS of SMTPServerConnection against software nobody
// here wrote: openssl s_client, Python smtplib, swaks. Loopback only, bounded
// time, for every I/O backend.

/// What the TLS test server saw (written on the loop thread, read by the test).
final class TLSServerRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var _messages = 0
    private var _handshakes: [String] = []
    private var _tlsAtMessage: [Bool] = []
    func message(tls: Bool) { lock.lock(); _messages += 1; _tlsAtMessage.append(tls); lock.unlock() }
    func handshake(_ description: String) { lock.lock(); _handshakes.append(description); lock.unlock() }
    var messages: Int { lock.lock(); defer { lock.unlock() }; return _messages }
    var handshakes: [String] { lock.lock(); defer { lock.unlock() }; return _handshakes }
    var tlsAtMessage: [Bool] { lock.lock(); defer { lock.unlock() }; return _tlsAtMessage }
}

/// Accepts everything, STARTTLS included; notes whether each message came over
/// TLS and what each handshake negotiated.
final class TLSAcceptingPolicy: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    let record: TLSServerRecord
    let refuseStartTLS: Bool
    init(record: TLSServerRecord, refuseStartTLS: Bool = false) { self.record = record; self.refuseStartTLS = refuseStartTLS }
    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        if case .endOfData = request { record.message(tls: session.isTLSActive) }
        if case .startTLS = request, refuseStartTLS { return .reply(SMTPReply(454, "4.7.0", "TLS not available due to temporary reason")) }
        return .accept
    }
    func serverConnectionDidEndTLSHandshake(_ tls: TLSConnection?) {
        guard let tls else { return }
        record.handshake("\(tls.negotiatedProtocol ?? "?") \(tls.negotiatedCipher ?? "?")")
    }
}

func tlsEventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline { if condition() { return true }; usleep(10_000) }
    return condition()
}

/// A test server with TLS (STARTTLS, or implicit) whose connections note what they saw in the record.
func tlsTestServer<L: EventLoop>(_ type: L.Type, context: TLSContext, implicitTLS: Bool, offerStartTLS: Bool = true,
                                 refuseStartTLS: Bool = false) throws -> (PeregrineTestServer<L>, TLSServerRecord) {
    let record = TLSServerRecord()
    var options = PeregrineTestServer<L>.Options()
    options.configuration.startTLSEnabled = !implicitTLS && offerStartTLS
    options.tlsContext = context
    options.implicitTLS = implicitTLS
    let server = try PeregrineTestServer<L>(options) { _ in
        TLSAcceptingPolicy(record: record, refuseStartTLS: refuseStartTLS)
    }
    return (server, record)
}

/// Runs `body` against a TLS server on backend `kind` (a backend that cannot start here is skipped).
func withTLSServer(_ kind: BackendKind, implicitTLS: Bool = false, offerStartTLS: Bool = true, refuseStartTLS: Bool = false,
                   _ body: (UInt16, TLSServerRecord) throws -> Void) throws {
    let context = try TLSTestCertificates.serverContext()
    func open<L: EventLoop>(_ type: L.Type) throws {
        let server: PeregrineTestServer<L>
        let record: TLSServerRecord
        do {
            (server, record) = try tlsTestServer(L.self, context: context, implicitTLS: implicitTLS,
                                                 offerStartTLS: offerStartTLS, refuseStartTLS: refuseStartTLS)
        } catch let e as IOError {
            if case .unsupported = e.kind { try Skip.because("the \(L.kind) backend cannot start here: \(e)") }
            throw e
        }
        defer { server.stop() }
        try #require(server.port != 0)
        try body(server.port, record)
    }
    try open(kind.loopType)
}

let tlsSmtplibScript = #"""
import smtplib, ssl, sys
port, implicit = int(sys.argv[1]), sys.argv[2] == "implicit"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for i in range(2):   # the second connection may resume
    if implicit:
        s = smtplib.SMTP_SSL("127.0.0.1", port, timeout=20, context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", port, timeout=20)
        s.ehlo("client.test")
        assert s.has_extn("starttls"), "STARTTLS not offered"
        code, _ = s.starttls(context=ctx)
        assert code == 220, code
        s.ehlo("client.test")
        assert not s.has_extn("starttls"), "STARTTLS offered again over TLS"
    print("VERSION", s.sock.version(), s.sock.cipher()[0])
    s.sendmail("a@src.test", ["b@dst.test"], "Subject: t\r\n\r\n" + ("x" * 70 + "\r\n") * 1000)
    s.quit()
print("DONE")
"""#

/// RFC 3207 §6: commands pipelined after STARTTLS must not be answered after the handshake.
let tlsInjectionScript = #"""
import socket, ssl, sys
port = int(sys.argv[1])
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
f = sock.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline()
        if not line: raise SystemExit("EOF")
        lines.append(line.decode())
        if line[3:4] != b"-": return lines
print("GREETING", reply()[0].strip())
sock.sendall(b"EHLO client.test\r\n"); reply()
sock.sendall(b"STARTTLS\r\nRSET\r\n")          # one packet: the injection
r = reply()
print("STARTTLS", r[0].strip())
assert r[0].startswith("220"), r
# Nothing may be left in plain text either (the RSET answered before the handshake).
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(sock, server_hostname="mx.test")
tf = t.makefile("rb")
t.sendall(b"EHLO client.test\r\n")
first = tf.readline().decode()
print("FIRST", first.strip())
assert first.startswith("250-"), "first reply after the handshake is not the EHLO reply: " + first
print("DONE")
"""#

@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct TLSInteropTests {
    @Test(arguments: BackendKind.testable)
    func opensslSClientStartTLS(kind: BackendKind) throws {
        let openssl = try #require(findTool("openssl"), "openssl is not installed (scripts/setup installs it)")
        try withTLSServer(kind) { port, record in
            for version in ["-tls1_3", "-tls1_2"] {
                let (status, out) = runTool(openssl, ["s_client", "-starttls", "smtp", "-connect", "127.0.0.1:\(port)",
                                                          version, "-crlf", "-ign_eof", "-servername", "mx.test"],
                                               stdin: "EHLO client.test\nNOOP\nQUIT\n", seconds: 30)
                #expect(status == 0, "\(out)")
                #expect(out.contains(version == "-tls1_3" ? "TLSv1.3" : "TLSv1.2"), "\(out)")
                #expect(out.contains("250 "), "\(out)")
                #expect(out.contains("221"), "\(out)")
            }
            #expect(tlsEventually { record.handshakes.count == 2 })
        }
    }

    @Test(arguments: BackendKind.testable)
    func pythonSmtplibStartTLS(kind: BackendKind) throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        try withTLSServer(kind) { port, record in
            let (status, out) = runTool(python, ["-c", tlsSmtplibScript, String(port), "starttls"], seconds: 60)
            #expect(status == 0, "\(out)")
            #expect(out.contains("VERSION TLSv1.3"), "\(out)")
            #expect(out.contains("DONE"), "\(out)")
            #expect(tlsEventually { record.messages == 2 })
            #expect(record.tlsAtMessage == [true, true])
            #expect(record.handshakes.count == 2)
        }
    }

    @Test(arguments: BackendKind.testable)
    func pythonSmtplibImplicitTLS(kind: BackendKind) throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        try withTLSServer(kind, implicitTLS: true) { port, record in
            let (status, out) = runTool(python, ["-c", tlsSmtplibScript, String(port), "implicit"], seconds: 60)
            #expect(status == 0, "\(out)")
            #expect(out.contains("DONE"), "\(out)")
            #expect(tlsEventually { record.messages == 2 })
            #expect(record.handshakes.count == 2)
        }
    }

    @Test(arguments: BackendKind.testable)
    func swaksTLS(kind: BackendKind) throws {
        let swaks = try #require(findTool("swaks"), "swaks is not installed (scripts/setup installs it)")
        try withTLSServer(kind) { port, record in
            let (status, out) = runTool(swaks, ["--server", "127.0.0.1:\(port)", "--tls", "--from", "a@src.test",
                                                   "--to", "b@dst.test", "--helo", "swaks.test"], seconds: 30)
            #expect(status == 0, "\(out)")
            #expect(out.contains("TLS started"), "\(out)")
            #expect(tlsEventually { record.messages == 1 })
            #expect(record.tlsAtMessage == [true])
        }
    }

    @Test(arguments: BackendKind.testable)
    func commandsPipelinedAfterStartTLSAreDiscarded(kind: BackendKind) throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        try withTLSServer(kind) { port, _ in
            let (status, out) = runTool(python, ["-c", tlsInjectionScript, String(port)], seconds: 30)
            #expect(status == 0, "\(out)")
            #expect(out.contains("FIRST 250-mx.test"), "\(out)")
        }
    }

    @Test(arguments: BackendKind.testable)
    func plainTextAfterStartTLSFailsTheHandshakeAndCloses(kind: BackendKind) throws {
        let python = try #require(findTool("python3"), "python3 is not installed (scripts/setup installs it)")
        let script = #"""
        import socket, sys
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
        f = s.makefile("rb")
        f.readline(); s.sendall(b"EHLO c\r\n")
        while f.readline()[3:4] == b"-": pass
        s.sendall(b"STARTTLS\r\n"); print(f.readline().decode().strip())
        s.sendall(b"MAIL FROM:<a@b>\r\n")   # plain text where a ClientHello belongs
        rest = s.recv(4096)
        while True:
            more = s.recv(4096)
            if not more: break
            rest += more
        print("CLOSED", rest[:1] == b"\x15" or rest == b"")   # a TLS alert record, or nothing
        """#
        try withTLSServer(kind) { port, record in
            let (status, out) = runTool(python, ["-c", script, String(port)], seconds: 30)
            #expect(status == 0, "\(out)")
            #expect(out.contains("220"), "\(out)")
            #expect(out.contains("CLOSED True"), "\(out)")
            #expect(record.handshakes.isEmpty)
        }
    }
}
