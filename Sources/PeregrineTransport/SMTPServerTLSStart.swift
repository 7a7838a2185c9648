/// How an `SMTPServerConnection` goes on after STARTTLS was accepted.
public enum SMTPServerTLSStart {
    /// The TLS handshake with the connection's `tlsContext` (no context: the connection closes after the 220).
    case handshake
    /// The client's first TLS bytes are answered with these plain bytes, then
    /// the connection closes: a test peer that behaves like a broken
    /// middlebox.
    case answerInPlaintext([UInt8])
}
