import PeregrineIO
import PeregrineSMTP

/// Whether a client connection asks for STARTTLS.
public enum SMTPClientTLSPolicy: Sendable, Equatable {
    /// Never (plain text).
    case off
    /// When offered; refused or not offered → plain text. A failed handshake
    /// ends the connection (`tlsFailure` says why): the owner retries in
    /// plain text and may remember that for the host.
    case opportunistic
    /// STARTTLS or nothing: not offered, refused or a failed handshake → QUIT
    /// / close with `tlsFailure` set, nothing sent in plain text.
    case required
}

/// STARTTLS for `SMTPClientConnection`: on `.ready` it sends STARTTLS when the
/// policy wants it, runs the handshake after the 220, then the session EHLOs
/// again through TLS. Session bytes go through the TLSConnection from then on.
extension SMTPClientConnection {
    /// On `.ready`: true when STARTTLS was sent (or the connection is being
    /// ended for want of TLS) instead of asking for a message.
    func startTLSIfWanted(_ extensions: SMTPExtensions) -> Bool {
        guard tlsPolicy != .off, !tlsAttempted, !session.isTLSActive else { return false }
        tlsAttempted = true
        guard tlsContext != nil, extensions.startTLS else {
            tlsFailure = tlsContext == nil ? "no TLS context" : "STARTTLS not offered"
            if tlsPolicy == .required { session.quit(); return true }
            return false
        }
        return session.startTLS()
    }

    /// The server's answer to STARTTLS.
    func startTLSReplied(_ reply: SMTPReply) {
        guard reply.code == 220 else {
            tlsFailure = "STARTTLS refused: \(reply.code) \(reply.lines.joined(separator: " "))"
            // Required: the `.ready` that follows must not send a message.
            if tlsPolicy == .required { nextMessage = { nil } }
            return
        }
        guard let context = tlsContext else { return }
        do {
            let c = try context.makeClientConnection(serverName: tlsServerName, verifyHostname: tlsVerifyHostname)
            tls = c
            if tlsPlaintext == nil { tlsPlaintext = .allocate(byteCount: 16384, alignment: 16) }
            if tlsCiphertext == nil { tlsCiphertext = .allocate(byteCount: 65536, alignment: 16) }
            if case .failed(let e) = c.handshake() { handshakeFailed(e) } // else: the ClientHello is pending
        } catch {
            handshakeFailed(error)
        }
    }

    private func handshakeFailed(_ e: TLSError) {
        tlsFailure = e.description
        session.tlsFailed(e.description)
    }

    /// Bytes from the socket once TLS has started.
    func receivedCiphertext(_ bytes: UnsafeRawBufferPointer, _ tls: TLSConnection) {
        tls.feedCiphertext(bytes)
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO: return
            case .failed(let e): handshakeFailed(e); return
            case .done:
                tlsFailure = nil
                session.tlsEstablished()
                onTLSEstablished?(self)
            }
        }
        guard let plain = tlsPlaintext else { return }
        while true {
            let n: Int
            do { n = try tls.readPlaintext(into: plain) } catch {
                tlsFailure = error.description
                session.connectionClosed()
                return
            }
            if n == 0 { break }
            session.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n]))
        }
        if tls.receivedCloseNotify { session.connectionClosed() }
    }

    /// Encrypts the session's output and sends pending ciphertext.
    func flushTLS(_ tls: TLSConnection) {
        guard let s = socket, let cipher = tlsCiphertext else { return }
        if tls.isHandshakeComplete && !session.output.isEmpty {
            session.swapOutput(&tlsOutput)
            let ok = tlsOutput.withUnsafeReadableBytes { bytes -> Bool in
                do { try tls.writePlaintext(bytes); return true } catch { return false }
            }
            tlsOutput.clear()
            if !ok { session.connectionClosed() }
        }
        if reason != nil && !closeNotifyQueued && tls.isHandshakeComplete {
            closeNotifyQueued = true
            tls.close()
        }
        let n = tls.takeCiphertext(into: cipher)
        guard n > 0 else { return }
        sending = true
        loop.send(s, UnsafeRawBufferPointer(rebasing: cipher[0..<n]), onSend)
    }
}
