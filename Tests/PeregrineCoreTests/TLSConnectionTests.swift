import Foundation
import PeregrineSMTP
import Testing
import PeregrineTLS

/// Server and client `TLSConnection`s talking through byte buffers only.
@Suite(.blockingIO) struct TLSConnectionTests {
    @Test(arguments: [TLSVersion.tls12, .tls13])
    func handshakeAndDataBothWays(version: TLSVersion) throws {
        let server = try TLSTestCertificates.serverContext(maximumVersion: version)
        let client = try TLSContext.client()
        let s = try server.makeServerConnection()
        let c = try client.makeClientConnection(serverName: "mx.test")
        let (cr, sr) = TLSPipe.handshake(client: c, server: s)
        #expect(cr == .done)
        #expect(sr == .done)
        #expect(c.isHandshakeComplete && s.isHandshakeComplete)
        let expected = version == .tls12 ? "TLSv1.2" : "TLSv1.3"
        #expect(c.negotiatedProtocol == expected)
        #expect(s.negotiatedProtocol == expected)
        #expect(c.negotiatedCipher != nil)
        #expect(c.negotiatedCipher == s.negotiatedCipher)
        #expect(s.serverName == "mx.test")
        #expect(!c.wasResumed)
        #expect(!c.peerVerified)

        let hello = Array("EHLO client.test\r\n".utf8)
        #expect(try TLSPipe.send(hello, from: c, to: s) == hello)
        let reply = Array("250-mx.test\r\n250 STARTTLS\r\n".utf8)
        #expect(try TLSPipe.send(reply, from: s, to: c) == reply)

        // Many records in both directions.
        let big = (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(try TLSPipe.send(big, from: c, to: s) == big)
        #expect(try TLSPipe.send(big, from: s, to: c) == big)
    }

    @Test(arguments: [TLSVersion.tls12, .tls13])
    func resumesOnSecondConnection(version: TLSVersion) throws {
        let server = try TLSTestCertificates.serverContext(maximumVersion: version)
        let client = try TLSContext.client()
        for round in 0..<3 {
            let s = try server.makeServerConnection()
            let c = try client.makeClientConnection(serverName: "mx.test")
            let (cr, sr) = TLSPipe.handshake(client: c, server: s)
            #expect(cr == .done && sr == .done)
            #expect(c.wasResumed == (round > 0), "round \(round)")
            #expect(s.wasResumed == (round > 0), "round \(round)")
            // Data both ways lets the client read the TLS 1.3 ticket.
            _ = try TLSPipe.send(Array("QUIT\r\n".utf8), from: c, to: s)
            _ = try TLSPipe.send(Array("221 bye\r\n".utf8), from: s, to: c)
            c.close(); TLSPipe.transfer(c, s)
            s.close(); TLSPipe.transfer(s, c)
            _ = try TLSPipe.readAll(c)
        }
        #expect(client.cachedSessionCount == 1)

        // Another host key has no session to resume.
        let s = try server.makeServerConnection()
        let c = try client.makeClientConnection(serverName: "other.test")
        let (cr, sr) = TLSPipe.handshake(client: c, server: s)
        #expect(cr == .done && sr == .done)
        #expect(!c.wasResumed)
    }

    @Test func closeNotifyIsSeen() throws {
        let s = try TLSTestCertificates.serverContext().makeServerConnection()
        let c = try TLSContext.client().makeClientConnection()
        _ = TLSPipe.handshake(client: c, server: s)
        #expect(!s.receivedCloseNotify)
        c.close()
        #expect(c.pendingCiphertextBytes > 0)
        TLSPipe.transfer(c, s)
        #expect(try TLSPipe.readAll(s).isEmpty)
        #expect(s.receivedCloseNotify)
    }

    @Test func garbageInsteadOfClientHelloFailsAsValue() throws {
        let s = try TLSTestCertificates.serverContext().makeServerConnection()
        let garbage = Array("EHLO attacker.test\r\nMAIL FROM:<a@b>\r\n".utf8)
        garbage.withUnsafeBytes { s.feedCiphertext($0) }
        guard case .failed(let e) = s.handshake() else {
            Issue.record("handshake did not fail"); return
        }
        #expect(e.kind == .handshake)
        #expect(!e.detail.isEmpty)
        // Stays failed; reads and writes report it too.
        #expect(s.handshake() == .failed(e))
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
        defer { buf.deallocate() }
        #expect(throws: TLSError.self) { _ = try s.readPlaintext(into: buf) }
    }

    @Test func garbageInsteadOfServerHelloFailsAsValue() throws {
        let c = try TLSContext.client().makeClientConnection(serverName: "mx.test")
        #expect(c.handshake() == .wantIO)
        #expect(c.pendingCiphertextBytes > 0) // the ClientHello
        var rng = SystemRandomNumberGenerator()
        let garbage = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
        garbage.withUnsafeBytes { c.feedCiphertext($0) }
        guard case .failed(let e) = c.handshake() else {
            Issue.record("handshake did not fail"); return
        }
        #expect(e.kind == .handshake)
    }

    @Test func truncatedRecordAfterHandshakeIsAnError() throws {
        let s = try TLSTestCertificates.serverContext().makeServerConnection()
        let c = try TLSContext.client().makeClientConnection()
        _ = TLSPipe.handshake(client: c, server: s)
        // A record header claiming an impossible length.
        [0x17, 0x03, 0x03, 0xFF, 0xFF, 0, 0, 0].withUnsafeBytes { s.feedCiphertext($0) }
        #expect(throws: TLSError.self) { _ = try TLSPipe.readAll(s) }
    }

    @Test func writeBeforeHandshakeIsNotReady() throws {
        let c = try TLSContext.client().makeClientConnection()
        do {
            try Array("x".utf8).withUnsafeBytes { try c.writePlaintext($0) }
            Issue.record("write succeeded")
        } catch {
            #expect((error as? TLSError)?.kind == .notReady)
        }
    }

    @Test func versionMismatchFails() throws {
        let server = try TLSTestCertificates.serverContext(minimumVersion: .tls13)
        let client = try TLSContext.client(maximumVersion: .tls12)
        let (cr, sr) = TLSPipe.handshake(client: try client.makeClientConnection(), server: try server.makeServerConnection())
        guard case .failed = cr, case .failed = sr else {
            Issue.record("expected both to fail, got \(cr) \(sr)"); return
        }
    }

    @Test func verifiesHostnameAgainstTrustStore() throws {
        let files = try #require(TLSTestCertificates.files)
        let server = try TLSTestCertificates.serverContext()
        let trusting = try TLSContext.client(trustStore: .file(files.certificate))

        let good = try trusting.makeClientConnection(serverName: "mx.test", verifyHostname: "mx.test")
        let (cr, _) = TLSPipe.handshake(client: good, server: try server.makeServerConnection())
        #expect(cr == .done)
        #expect(good.peerVerified)

        let wrongName = try trusting.makeClientConnection(serverName: "mx.test", verifyHostname: "other.test")
        let (wr, _) = TLSPipe.handshake(client: wrongName, server: try server.makeServerConnection())
        guard case .failed(let e) = wr else { Issue.record("wrong name accepted"); return }
        #expect(e.detail.contains("hostname mismatch"), "\(e)")

        // The system store does not know the throwaway CA.
        let system = try TLSContext.client(trustStore: .system)
        let untrusted = try system.makeClientConnection(serverName: "mx.test", verifyHostname: "mx.test")
        let (ur, _) = TLSPipe.handshake(client: untrusted, server: try server.makeServerConnection())
        guard case .failed(let u) = ur else { Issue.record("self-signed accepted"); return }
        #expect(u.detail.contains("certificate verification"), "\(u)")

        // Verification needs a trust store.
        #expect(throws: TLSError.self) {
            _ = try TLSContext.client().makeClientConnection(serverName: "mx.test", verifyHostname: "mx.test")
        }
    }

    @Test func badConfigurationIsAnErrorValue() throws {
        let files = try #require(TLSTestCertificates.files)
        do {
            _ = try TLSContext.server(certificateFile: files.directory + "/missing.pem", keyFile: files.key)
            Issue.record("missing certificate accepted")
        } catch {
            #expect(error.kind == .configuration)
            #expect(error.operation.contains("missing.pem"))
        }
        let other = try #require(TLSTestCertificates.generate(commonName: "other.test"))
        defer { try? FileManager.default.removeItem(atPath: other.directory) }
        do {
            _ = try TLSContext.server(certificateFile: files.certificate, keyFile: other.key)
            Issue.record("mismatched key accepted")
        } catch {
            #expect(error.kind == .configuration)
        }
        #expect(throws: TLSError.self) { _ = try TLSContext.client(cipherList: "NO-SUCH-CIPHER") }
        #expect(throws: TLSError.self) { _ = try TLSContext.client(trustStore: .file("/nonexistent/ca.pem")) }
    }
}
