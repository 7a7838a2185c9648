import PeregrineCore
import PeregrineIO
import PeregrineSMTP

/// STARTTLS on a sink connection (with `--tls-cert`/`--tls-key`): after the
/// 220, received bytes are ciphertext for a `TLSConnection` whose plaintext
/// feeds the session, and replies are encrypted before they are sent.
/// `starttls break` answers the client's handshake with bytes that are not
/// TLS, so the client's handshake fails the way it does behind a broken
/// middlebox.
extension SinkSMTPConnection {
    /// STARTTLS was accepted: the 220 goes out in plain text, then TLS (or the break).
    func beginTLS() {
        guard tls == nil, !tlsBroken else { closeAfterSend = true; return }
        if conn.provider.profile.startTLS == .break { tlsBroken = true; return }
        guard let context = shared.tlsContext, let c = try? context.makeServerConnection() else {
            closeAfterSend = true
            return
        }
        tls = c
        tlsStarting = true
        if tlsPlaintext == nil { tlsPlaintext = .allocate(byteCount: 16384, alignment: 16) }
        if tlsCiphertext == nil { tlsCiphertext = .allocate(byteCount: 65536, alignment: 16) }
    }

    /// Bytes from the socket once STARTTLS was accepted.
    func receivedCiphertext(_ bytes: UnsafeRawBufferPointer) {
        guard let tls else {
            // `starttls break`: a plain-text reply where the ServerHello belongs.
            shared.lock.withLock { shared.policy.tlsHandshake(conn, ok: false) }
            tlsBroken = false
            closeAfterSend = true
            guard !sending else { return }
            sending = true
            loop.send(socket, sinkBrokenTLSAnswer, onSend)
            return
        }
        tls.feedCiphertext(bytes)
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO:
                flush()
                return
            case .failed:
                shared.lock.withLock { shared.policy.tlsHandshake(conn, ok: false) }
                closeAfterSend = true
                flush()
                if !sending { finish() }
                return
            case .done:
                shared.lock.withLock { shared.policy.tlsHandshake(conn, ok: true) }
            }
        }
        guard let plain = tlsPlaintext else { return }
        while !closed {
            let n: Int
            do { n = try tls.readPlaintext(into: plain) } catch {
                closeAfterSend = true
                flush()
                if !sending { finish() }
                return
            }
            if n == 0 { break }
            let actions = session.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n]))
            if dropNow { finish(); return }
            handle(actions)
        }
        if tls.receivedCloseNotify && !closed {
            closeAfterSend = true
            flush()
            if !sending { finish() }
        } else {
            flush() // the handshake's own records, session tickets
        }
    }

    /// Encrypts the session's output (after the handshake) and sends what TLS has pending.
    func flushTLS(_ tls: TLSConnection) {
        if tls.isHandshakeComplete && !session.output.isEmpty {
            session.swapOutput(&tlsOutput)
            let ok = tlsOutput.withUnsafeReadableBytes { bytes -> Bool in
                do { try tls.writePlaintext(bytes); return true } catch { return false }
            }
            tlsOutput.clear()
            if !ok { finish(); return }
        }
        if closeAfterSend && !closeNotifyQueued && tls.isHandshakeComplete {
            closeNotifyQueued = true
            tls.close()
        }
        guard let cipher = tlsCiphertext else { return }
        let n = tls.takeCiphertext(into: cipher)
        guard n > 0 else {
            if closeAfterSend { finish() }
            return
        }
        sending = true
        loop.send(socket, UnsafeRawBufferPointer(rebasing: cipher[0..<n]), onSend)
    }
}

/// What `starttls break` sends where the ServerHello belongs (not a TLS record).
private let sinkBrokenTLSAnswer: UnsafeRawBufferPointer = {
    let text = Array("421 4.7.0 TLS is broken here\r\n".utf8)
    let m = UnsafeMutableRawBufferPointer.allocate(byteCount: text.count, alignment: 1)
    m.copyBytes(from: text)
    return UnsafeRawBufferPointer(m)
}()
