import Foundation
import PeregrineTestSupport
import PeregrineIO
import PeregrineSMTP
import Testing
import PeregrineTLS
import PeregrineTransport

/// What one client connection did.
struct TLSDeliveryOutcome: Sendable {
    var delivered = 0
    var finalCodes: [Int] = []
    var close: SMTPClientCloseReason?
    var tlsProtocol: String?
    var tlsCipher: String?
    var resumed = false
    var tlsFailure: String?
}

final class TLSOutcomeBox: @unchecked Sendable {
    let lock = NSLock()
    var outcome = TLSDeliveryOutcome()
    func update(_ f: (inout TLSDeliveryOutcome) -> Void) { lock.lock(); f(&outcome); lock.unlock() }
    var value: TLSDeliveryOutcome { lock.lock(); defer { lock.unlock() }; return outcome }
}

/// Delivers `messages` messages over one SMTPClientConnection on a fresh loop
/// of type `L` (a backend that cannot start here skips the test case).
func tlsDeliver<L: EventLoop>(_ type: L.Type, ip: String = "127.0.0.1", port: UInt16, context: TLSContext?,
                              policy: SMTPClientTLSPolicy, serverName: String = "mx.test",
                              messages: Int = 1) throws -> TLSDeliveryOutcome {
    let loop: L
    do { loop = try L() } catch {
        if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
        throw error
    }
    let finished = DispatchSemaphore(value: 0)
    Thread { loop.run(); finished.signal() }.start()
    let box = TLSOutcomeBox()
    let done = DispatchSemaphore(value: 0)
    let ctx = Unchecked(context)
    let address = try SocketAddress(ip: ip, port: port)
    let loopBox = Unchecked(loop)
    loop.execute {
        let conn = SMTPMessageListClient(loop: loopBox.value, configuration: SMTPClientConfiguration(heloName: "peregrine.test"))
        conn.tls = SMTPClientTLS(policy: policy, context: ctx.value, serverName: serverName)
        var sent = 0
        conn.nextMessage = {
            guard sent < messages else { return nil }
            sent += 1
            let body = Array("Subject: tls \(sent)\r\n\r\n".utf8) + Array(String(repeating: String(repeating: "y", count: 70) + "\r\n", count: 300).utf8)
            return SMTPOutgoingMessage(envelope: SMTPClientEnvelope(mailFrom: "a@src.test", recipients: ["b@dst.test"]), body: body)
        }
        conn.onResult = { r in box.update { $0.delivered += r.deliveredCount; $0.finalCodes.append(r.finalReply?.code ?? 0) } }
        conn.onTLSEstablished = { c in
            box.update { $0.tlsProtocol = c.tls?.negotiatedProtocol; $0.tlsCipher = c.tls?.negotiatedCipher; $0.resumed = c.tls?.connection?.wasResumed ?? false }
        }
        conn.onClose = { reason in
            let failure = conn.tls?.failure
            box.update { $0.close = reason; $0.tlsFailure = failure }
            done.signal()
        }
        conn.connect(to: address, timeout: 10_000_000_000)
    }
    let inTime = done.wait(timeout: .now() + 60) == .success
    loop.stop()
    _ = finished.wait(timeout: .now() + 10)
    #expect(inTime, "the client connection did not finish")
    return box.value
}

/// Peregrine's client side of STARTTLS against Peregrine's server and a real Postfix smtpd.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct TLSClientInteropTests {
    @Test(arguments: BackendKind.testable)
    func clientStartTLSToPeregrineServerAndResumes(kind: BackendKind) throws {
        let client = try TLSContext.client()
        try withTLSServer(kind) { port, record in
            func run<L: EventLoop>(_ t: L.Type) throws {
                let first = try tlsDeliver(t, port: port, context: client, policy: .required, messages: 2)
                #expect(first.delivered == 2)
                #expect(first.tlsProtocol == "TLSv1.3")
                #expect(first.tlsFailure == nil)
                #expect(!first.resumed)
                #expect(first.close == .quit(SMTPReply(221, "2.0.0", "Bye")) || { if case .quit = first.close { return true }; return false }())
                let second = try tlsDeliver(t, port: port, context: client, policy: .opportunistic)
                #expect(second.delivered == 1)
                #expect(second.resumed, "the second connection should resume the cached session")
                #expect(tlsEventually { record.messages == 3 })
                #expect(record.tlsAtMessage == [true, true, true])
            }
            try run(kind.loopType)
        }
    }

    @Test(arguments: BackendKind.testable)
    func requiredWithoutOfferSendsNothingOpportunisticFallsBack(kind: BackendKind) throws {
        let client = try TLSContext.client()
        try withTLSServer(kind, offerStartTLS: false) { port, record in
            func run<L: EventLoop>(_ t: L.Type) throws {
                let required = try tlsDeliver(t, port: port, context: client, policy: .required)
                #expect(required.delivered == 0)
                #expect(required.tlsFailure == "STARTTLS not offered")
                #expect(required.tlsProtocol == nil)
                let opportunistic = try tlsDeliver(t, port: port, context: client, policy: .opportunistic)
                #expect(opportunistic.delivered == 1)
                #expect(opportunistic.tlsProtocol == nil)
                #expect(tlsEventually { record.messages == 1 })
                #expect(record.tlsAtMessage == [false])
            }
            try run(kind.loopType)
        }
    }

    @Test(arguments: BackendKind.testable)
    func refusedStartTLSRequiredQuitsOpportunisticSendsPlain(kind: BackendKind) throws {
        let client = try TLSContext.client()
        try withTLSServer(kind, refuseStartTLS: true) { port, record in
            func run<L: EventLoop>(_ t: L.Type) throws {
                let required = try tlsDeliver(t, port: port, context: client, policy: .required)
                #expect(required.delivered == 0)
                #expect(required.tlsFailure?.hasPrefix("STARTTLS refused: 454") == true, "\(String(describing: required.tlsFailure))")
                guard case .quit = required.close else { Issue.record("close: \(String(describing: required.close))"); return }
                let opportunistic = try tlsDeliver(t, port: port, context: client, policy: .opportunistic)
                #expect(opportunistic.delivered == 1)
                #expect(opportunistic.tlsFailure?.hasPrefix("STARTTLS refused") == true)
                #expect(tlsEventually { record.messages == 1 })
                #expect(record.tlsAtMessage == [false])
            }
            try run(kind.loopType)
        }
    }

    @Test(arguments: BackendKind.testable)
    func handshakeFailureIsReportedNotTrapped(kind: BackendKind) throws {
        // The server only speaks TLS 1.3; this client only 1.2.
        let client = try TLSContext.client(maximumVersion: .tls12)
        let server = try TLSTestCertificates.serverContext(minimumVersion: .tls13)
        try kind.requireAvailable()
        func run<L: EventLoop>(_ t: L.Type) throws {
            let (s, record) = try tlsTestServer(L.self, context: server, implicitTLS: false)
            defer { s.stop() }
            let out = try tlsDeliver(t, port: s.port, context: client, policy: .opportunistic)
            #expect(out.delivered == 0)
            #expect(out.tlsFailure?.contains("handshake") == true, "\(String(describing: out.tlsFailure))")
            guard case .protocolError = out.close else { Issue.record("close: \(String(describing: out.close))"); return }
            #expect(record.messages == 0)
        }
        try run(kind.loopType)
    }

    /// Peregrine → Postfix smtpd (STARTTLS, throwaway certificate) → relayed on to a Peregrine server.
    @Test(arguments: BackendKind.testable)
    func clientStartTLSToPostfix(kind: BackendKind) throws {
        _ = try #require(findTool("postfix"), "postfix is not installed (scripts/setup installs it)")
        try #require(getuid() == 0, "a private Postfix instance needs root")
        let files = try #require(TLSTestCertificates.files)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/postfix-instance").path
        try #require(FileManager.default.fileExists(atPath: script))
        let client = try TLSContext.client()
        try withTLSServer(kind) { sinkPort, record in
            let dir = files.directory + "/postfix-\(kind)"
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o755])
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: files.directory)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: files.key)
            // smtpd on an address of this test process's own (PrivateLoopback), so the
            // port is free by construction and a connection there reaches Postfix only.
            let ip = PrivateLoopback.address(132, (BackendKind.allCases.firstIndex(of: kind) ?? 0) + 1), port: UInt16 = 2525
            // The certificate goes in the child's environment, not this process's: a
            // setenv here would race other suites' Process.run() and leak into their Postfix.
            let (status, out) = runTool("/bin/bash", [script, "start", dir, "\(ip):\(port)", "127.0.0.1:\(sinkPort)"],
                                        environment: ["POSTFIX_TLS_CERT": files.certificate, "POSTFIX_TLS_KEY": files.key],
                                        seconds: 60)
            defer {
                _ = runTool("/bin/bash", [script, "stop", dir], seconds: 60)
                try? FileManager.default.removeItem(atPath: dir)
            }
            try #require(status == 0, "\(out)")
            try #require(PrivateLoopback.waitForListener(ip, port, seconds: 30), "Postfix smtpd is not listening on \(ip):\(port)")
            func run<L: EventLoop>(_ t: L.Type) throws {
                let o = try tlsDeliver(t, ip: ip, port: port, context: client, policy: .required,
                                       serverName: "postfix-peer.peregrine.test")
                #expect(o.delivered == 1, "\(o)")
                #expect(o.tlsProtocol == "TLSv1.3", "\(o)")
                #expect(o.tlsFailure == nil)
                #expect(tlsEventually(30) { record.messages == 1 }, "Postfix did not relay the message")
                let log = (try? String(contentsOfFile: dir + "/maillog", encoding: .utf8)) ?? ""
                #expect(log.contains("TLS connection established from"), "\(log.suffix(2000))")
            }
            try run(kind.loopType)
        }
    }
}

