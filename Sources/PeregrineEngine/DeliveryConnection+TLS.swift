import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// STARTTLS on a delivery connection: the `SMTPClientTLS` steps (policy at
/// `.ready`, handshake after the 220, byte transform after it) plus what the
/// engine must learn: the negotiated protocol and cipher for accounting, and
/// a failure (not offered, refused, handshake failed) for the fallback
/// memory or, when TLS is required, the deferral with its diagnostic.
extension DeliveryConnection {
    /// On `.ready`: true when the session must not start a message (STARTTLS
    /// was sent, or QUIT because TLS is required and unavailable).
    func tlsReady(_ ext: SMTPExtensions, _ tls: SMTPClientTLS) -> Bool {
        guard tls.ready(ext, session: session) else { return false }
        // True with no failure: STARTTLS was sent. With one: QUIT, TLS is required.
        if tls.policy == .required, let why = tls.failure, let host {
            engine.tlsFailed(on: self, host: host, required: true, handshake: false, why: why, info: attemptInfo)
        }
        return true
    }

    /// Ciphertext from the socket.
    func tlsReceive(_ bytes: UnsafeRawBufferPointer, _ tls: SMTPClientTLS) {
        if tls.receive(bytes, session: session) {
            attemptInfo?.tlsProtocol = tls.negotiatedProtocol
            attemptInfo?.tlsCipher = tls.negotiatedCipher
        }
    }

    /// The session ended: a handshake that never completed is a TLS failure.
    func tlsSessionClosed(_ tls: SMTPClientTLS) {
        guard let c = tls.connection, !c.isHandshakeComplete, let host else { return }
        tlsFailed = true
        engine.tlsFailed(on: self, host: host, required: tls.policy == .required, handshake: true,
                         why: tls.failure ?? "connection closed during the TLS handshake", info: attemptInfo)
    }
}
