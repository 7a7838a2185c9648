import PeregrineSMTP
import PeregrineIO
import PeregrineTLS

/// Whether a client connection asks for STARTTLS.
public enum SMTPClientTLSPolicy: Sendable, Equatable {
    /// Never (plain text).
    case off
    /// When offered; not offered or refused → plain text. A failed handshake
    /// ends the connection (`failure` says why): the owner retries in plain
    /// text and may remember that for the host for a while.
    case opportunistic
    /// STARTTLS or nothing: not offered, refused or a failed handshake → QUIT
    /// or close with `failure` set; no message goes out in plain text.
    case required
}

/// STARTTLS for an `SMTPClientConnection` (its `tls`): the policy decision,
/// the TLS handshake after the 220, and the byte transform after it. The
/// connection makes the four calls:
///
/// - on `.ready(ext)`: `if tls.ready(ext, session:) { break }` (STARTTLS was
///   sent, or QUIT for want of TLS: don't start a message);
/// - on `.startTLS(reply)`: `tls.startTLSReplied(reply, session:)`;
/// - received bytes: `if tls.isActive { tls.receive(bytes, session:) }`
///   instead of `session.receive(bytes)` (returns true once, when the
///   handshake completes);
/// - when not already sending: `if tls.isActive { tls.nextCiphertext(session:, closing:) }`
///   instead of swapping out `session.output`, and send what it returns.
///
/// Two buffers per TLS connection (16 KB plaintext, 64 KB ciphertext),
/// allocated at the 220 and reused for the connection's life.
public final class SMTPClientTLS {
    public let policy: SMTPClientTLSPolicy
    public let context: TLSContext?
    /// SNI and the session-cache key (the MX host name).
    public let serverName: String?
    /// Verify the server's certificate against this name (the context needs a trust store).
    public let verifyHostname: String?
    /// Where the session is cached for resumption (default: `serverName`).
    public let sessionKey: String?
    /// The TLS layer after a 220 to STARTTLS.
    public private(set) var connection: TLSConnection?
    /// Why TLS was wanted but not used, or failed — for the accounting record.
    public private(set) var failure: String?

    private var attempted = false
    private var closeNotifyQueued = false
    private var plaintext: UnsafeMutableRawBufferPointer?
    private var ciphertext: UnsafeMutableRawBufferPointer?
    private var output = ByteBuffer(capacity: 0)

    public init(policy: SMTPClientTLSPolicy, context: TLSContext?, serverName: String? = nil, verifyHostname: String? = nil,
                sessionKey: String? = nil) {
        self.policy = policy
        self.context = context
        self.serverName = serverName
        self.verifyHostname = verifyHostname
        self.sessionKey = sessionKey ?? serverName
    }

    deinit {
        plaintext?.deallocate()
        ciphertext?.deallocate()
    }

    /// TLS has started (bytes on the socket are TLS records).
    public var isActive: Bool { connection != nil }
    /// "TLSv1.3" etc. once established (accounting: dlvTlsProtocol).
    public var negotiatedProtocol: String? { connection?.negotiatedProtocol }
    /// OpenSSL's cipher name once established (accounting: dlvTlsCipher).
    public var negotiatedCipher: String? { connection?.negotiatedCipher }

    /// On `.ready`: true when it acted (STARTTLS sent, or QUIT because TLS is
    /// required and unavailable) and the owner must not start a message.
    public func ready(_ extensions: SMTPExtensions, session: SMTPClientSession) -> Bool {
        guard policy != .off, !session.isTLSActive else { return false }
        if attempted {
            // STARTTLS was refused (the session is ready again in plain text).
            if policy == .required { session.quit(); return true }
            return false
        }
        attempted = true
        guard context != nil, extensions.startTLS else {
            failure = context == nil ? "no TLS context" : "STARTTLS not offered"
            if policy == .required { session.quit(); return true }
            return false
        }
        return session.startTLS()
    }

    /// On `.startTLS(reply)`: 220 starts the handshake (the ClientHello is
    /// then pending in `nextCiphertext`); anything else is noted.
    public func startTLSReplied(_ reply: SMTPReply, session: SMTPClientSession) {
        guard reply.code == 220 else {
            failure = "STARTTLS refused: \(reply.code) \(reply.text)"
            return
        }
        guard let context else { return }
        do {
            let c = try context.makeClientConnection(serverName: serverName, verifyHostname: verifyHostname,
                                                 sessionKey: sessionKey)
            connection = c
            if plaintext == nil { plaintext = .allocate(byteCount: 16384, alignment: 16) }
            if ciphertext == nil { ciphertext = .allocate(byteCount: 65536, alignment: 16) }
            if case .failed(let e) = c.handshake() { handshakeFailed(e, session) }
        } catch {
            handshakeFailed(error, session)
        }
    }

    private func handshakeFailed(_ e: TLSError, _ session: SMTPClientSession) {
        failure = e.description
        session.tlsFailed(e.description)
    }

    /// Bytes from the socket while `isActive`. Returns true when this call
    /// completed the handshake (the session has queued its new EHLO).
    @discardableResult
    public func receive(_ bytes: UnsafeRawBufferPointer, session: SMTPClientSession) -> Bool {
        guard let tls = connection else { session.receive(bytes); return false }
        tls.feedCiphertext(bytes)
        var completed = false
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO: return false
            case .failed(let e): handshakeFailed(e, session); return false
            case .done:
                failure = nil
                completed = true
                session.tlsEstablished()
            }
        }
        guard let plain = plaintext else { return completed }
        while true {
            let n: Int
            do { n = try tls.readPlaintext(into: plain) } catch {
                failure = error.description
                session.connectionClosed()
                return completed
            }
            if n == 0 { break }
            session.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n]))
        }
        if tls.receivedCloseNotify { session.connectionClosed() }
        return completed
    }

    /// While `isActive` and nothing is being sent: encrypts the session's
    /// output and returns the next ciphertext to send, or nil. The bytes stay
    /// valid until the next call (call again after that send completes).
    /// `closing`: the session has ended; a close_notify follows the last reply.
    public func nextCiphertext(session: SMTPClientSession, closing: Bool) -> UnsafeRawBufferPointer? {
        guard let tls = connection, let cipher = ciphertext else { return nil }
        if tls.isHandshakeComplete && !session.output.isEmpty {
            session.swapOutput(&output)
            let ok = output.withUnsafeReadableBytes { bytes -> Bool in
                do { try tls.writePlaintext(bytes); return true } catch { return false }
            }
            output.clear()
            if !ok { session.connectionClosed() }
        }
        if closing && !closeNotifyQueued && tls.isHandshakeComplete {
            closeNotifyQueued = true
            tls.close()
        }
        let n = tls.takeCiphertext(into: cipher)
        return n > 0 ? UnsafeRawBufferPointer(rebasing: cipher[0..<n]) : nil
    }
}
