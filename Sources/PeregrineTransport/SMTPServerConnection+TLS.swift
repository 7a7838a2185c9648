import PeregrineIO
import PeregrineSMTP
import PeregrineTLS

/// STARTTLS / implicit TLS for `SMTPServerConnection`: once `tls` is set,
/// received bytes are ciphertext for the `TLSConnection`, whose plaintext
/// feeds the session; the session's output is encrypted, and the ciphertext
/// goes out through the send memory (what does not fit waits in OpenSSL's BIO).
/// One plaintext buffer per TLS connection, allocated when TLS starts and
/// reused for its whole life.
extension SMTPServerConnection {
    static var tlsPlaintextBufferSize: Int { 16384 }   // one TLS record

    /// STARTTLS was accepted: its 220 goes out in plain text, then TLS (or the handler's refusal).
    func startTLS() {
        guard tls == nil, tlsRefusal == nil else { closeAfterFlush = true; return }
        switch handler?.serverConnectionWillStartTLS() ?? .handshake {
        case .handshake:
            if !beginTLS(afterPlaintext: true) { closeAfterFlush = true }
        case .answerInPlaintext(let answer):
            tlsRefusal = answer
            encrypted = true
        }
    }

    /// Creates the TLS layer. `afterPlaintext`: the 220 to STARTTLS is still
    /// to be sent in plain text. False when there is no context (or OpenSSL failed).
    func beginTLS(afterPlaintext: Bool) -> Bool {
        guard let tlsContext, let connection = try? tlsContext.makeServerConnection() else { return false }
        tls = connection
        encrypted = true
        tlsStarting = afterPlaintext
        if tlsPlaintext == nil { tlsPlaintext = .allocate(byteCount: Self.tlsPlaintextBufferSize, alignment: 16) }
        return true
    }

    /// Bytes from the socket once STARTTLS was accepted (or with implicit TLS).
    func receivedCiphertext(_ bytes: UnsafeRawBufferPointer) {
        guard let tls else {
            // Refused: the plain answer where the ServerHello belongs, then close.
            guard tlsRefusal != nil, !tlsRefusalDue else { return }
            tlsRefusalDue = true
            closeAfterFlush = true
            handler?.serverConnectionDidEndTLSHandshake(nil)
            flush()
            if !sending { close() }
            return
        }
        tls.feedCiphertext(bytes)
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO:
                flush()
                return
            case .failed:
                handler?.serverConnectionDidEndTLSHandshake(nil)
                closeAfterFlushing() // OpenSSL's alert first
                return
            case .done:
                handler?.serverConnectionDidEndTLSHandshake(tls)
                guard !closed else { return }
                flush() // the implicit-TLS greeting, held back until now
            }
        }
        guard let plain = tlsPlaintext else { return }
        while !closed {
            let n: Int
            do { n = try tls.readPlaintext(into: plain) } catch {
                closeAfterFlushing()
                return
            }
            if n == 0 { break }
            receivePlaintext(UnsafeRawBufferPointer(rebasing: plain[0..<n]))
        }
        if closed { return }
        if tls.receivedCloseNotify {
            closeAfterFlushing()
        } else {
            flush() // TLS may have produced records of its own (e.g. session tickets)
        }
    }

    private func closeAfterFlushing() {
        closeAfterFlush = true
        flush()
        if !sending { close() }
    }

    /// Like `stageReplies`, into TLS: all of the unsent batch is written as
    /// plaintext (OpenSSL buffers the records). Returns the batch size and
    /// whether TLS took it.
    static func encryptReplies(_ batch: inout ByteBuffer, alreadySent: Int, session: SMTPServerSession,
                               tls: TLSConnection) -> (size: Int, ok: Bool) {
        var offset = alreadySent
        if offset >= batch.readableBytes {
            session.swapOutput(&batch)
            offset = 0
        }
        let size = batch.readableBytes
        guard offset < size else { return (size, true) }
        let ok = batch.withUnsafeReadableBytes { bytes -> Bool in
            do { try tls.writePlaintext(UnsafeRawBufferPointer(rebasing: bytes[offset...])); return true } catch { return false }
        }
        return (size, ok)
    }

    /// Encrypts the session's output (after the handshake) and sends pending ciphertext.
    func flushTLS(_ tls: TLSConnection) {
        // More replies go into OpenSSL only once its ciphertext is down to
        // one send: otherwise every completed send would move another batch
        // into the BIO, and a client that stops reading would grow it
        // without bound while the session never sees its output fill up.
        if tls.isHandshakeComplete && hasUnsentReplies && tls.pendingCiphertextBytes <= sendMemory.count {
            let (size, ok) = Self.encryptReplies(&replyBatch, alreadySent: replyBatchSent, session: session, tls: tls)
            replyBatchCount = size
            replyBatchSent = size
            if !ok { close(); return }
        }
        if closeAfterFlush && !closeNotifyQueued && tls.isHandshakeComplete && !hasUnsentReplies {
            closeNotifyQueued = true
            tls.close()
        }
        let n = tls.takeCiphertext(into: sendMemory) // not sending: flush checked
        guard n > 0 else { return }
        send(count: n)
    }
}
