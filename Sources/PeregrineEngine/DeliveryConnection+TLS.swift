import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// STARTTLS on a delivery connection: the transport runs the `SMTPClientTLS`
/// steps; the engine learns the negotiated protocol and cipher for
/// accounting, and a failure (not offered, refused, handshake failed) for
/// the fallback memory or, when TLS is required, the deferral with its diagnostic.
extension DeliveryConnection {
    func clientConnectionDidEstablishTLS(_ tls: SMTPClientTLS) {
        attemptInfo?.tlsProtocol = tls.negotiatedProtocol
        attemptInfo?.tlsCipher = tls.negotiatedCipher
    }

    /// Required and unavailable (the session QUITs), or a handshake that never completed.
    func clientConnectionTLSFailed(_ tls: SMTPClientTLS, handshake: Bool) {
        guard let host else { return }
        if handshake {
            tlsFailed = true
            engine.tlsFailed(on: self, host: host, required: tls.policy == .required, handshake: true,
                             why: tls.failure ?? "connection closed during the TLS handshake", info: attemptInfo)
        } else if tls.policy == .required, let why = tls.failure {
            engine.tlsFailed(on: self, host: host, required: true, handshake: false, why: why, info: attemptInfo)
        }
    }
}
