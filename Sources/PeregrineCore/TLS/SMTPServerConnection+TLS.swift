import PeregrineIO
import PeregrineSMTP

/// STARTTLS / implicit TLS for `SMTPServerConnection`: once `tls` is set,
/// received bytes are ciphertext for the `TLSConnection`, whose plaintext
/// feeds the session; the session's output is encrypted before it is sent.
/// One plaintext and one ciphertext buffer per TLS connection, allocated
/// when TLS starts and reused for its whole life.
extension SMTPServerConnection {
    static var tlsPlaintextBufferSize: Int { 16384 }   // one TLS record
    static var tlsCiphertextBufferSize: Int { 65536 }

    /// Creates the TLS layer. `afterPlaintext`: the 220 to STARTTLS is still
    /// to be sent in plain text. False when there is no context (or OpenSSL failed).
    func beginTLS(afterPlaintext: Bool) -> Bool {
        guard let tlsContext, let connection = try? tlsContext.makeServerConnection() else { return false }
        tls = connection
        tlsStarting = afterPlaintext
        if tlsPlaintext == nil { tlsPlaintext = .allocate(byteCount: Self.tlsPlaintextBufferSize, alignment: 16) }
        if tlsCiphertext == nil { tlsCiphertext = .allocate(byteCount: Self.tlsCiphertextBufferSize, alignment: 16) }
        return true
    }

    /// Bytes from the socket while TLS is on.
    func receivedCiphertext(_ bytes: UnsafeRawBufferPointer, _ tls: TLSConnection) {
        tls.feedCiphertext(bytes)
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO:
                flush()
                return
            case .failed:
                // Send OpenSSL's alert, then close.
                closeAfterFlush = true
                flush()
                if !sending { close() }
                return
            case .done:
                onTLSEstablished?(self)
                // The implicit-TLS greeting, held back until now.
                flush()
            }
        }
        guard let plain = tlsPlaintext else { return }
        while !closed {
            let n: Int
            do { n = try tls.readPlaintext(into: plain) } catch {
                closeAfterFlush = true
                flush()
                if !sending { close() }
                return
            }
            if n == 0 { break }
            apply(session.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n])))
        }
        if tls.receivedCloseNotify && !closed {
            closeAfterFlush = true
            flush()
            if !sending { close() }
        } else {
            flush() // TLS may have produced records of its own (e.g. session tickets)
        }
    }

    /// Encrypts the session's output (after the handshake) and sends pending ciphertext.
    func flushTLS(_ tls: TLSConnection) {
        if tls.isHandshakeComplete && !session.output.isEmpty {
            session.swapOutput(&tlsOutput)
            let ok = tlsOutput.withUnsafeReadableBytes { bytes -> Bool in
                do { try tls.writePlaintext(bytes); return true } catch { return false }
            }
            tlsOutput.clear()
            if !ok { close(); return }
        }
        if closeAfterFlush && !closeNotifyQueued && tls.isHandshakeComplete && session.output.isEmpty {
            closeNotifyQueued = true
            tls.close()
        }
        guard let cipher = tlsCiphertext else { return }
        let n = tls.takeCiphertext(into: cipher)
        guard n > 0 else { return }
        sending = true
        loop.send(socket, UnsafeRawBufferPointer(rebasing: cipher[0..<n]), onSend)
    }
}
