import COpenSSL

/// A TLS failure as a value: what was being done, and OpenSSL's error queue
/// text (which is drained, so the next operation starts clean).
public struct TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Building a context: a certificate, key, CA store or cipher list was rejected.
        case configuration
        /// The handshake failed (bad peer bytes, no shared protocol/cipher, verification).
        case handshake
        /// A record after the handshake was bad, or the peer closed without close_notify.
        case protocolFailure
        /// Plaintext was written before the handshake completed.
        case notReady
    }

    public let kind: Kind
    /// The operation, e.g. "SSL_do_handshake".
    public let operation: String
    /// OpenSSL's error queue, oldest first, joined by "; " (may be empty).
    public let detail: String
    /// The file OpenSSL rejected, when one was (so a config error can point
    /// at the directive that named it).
    public let file: String?

    public init(_ kind: Kind, operation: String, detail: String, file: String? = nil) {
        self.kind = kind
        self.operation = operation
        self.detail = detail
        self.file = file
    }

    public var description: String {
        detail.isEmpty ? "TLS \(kind) in \(operation)" : "TLS \(kind) in \(operation): \(detail)"
    }

    /// Builds an error from (and clears) the calling thread's OpenSSL error queue.
    static func fromQueue(_ kind: Kind, _ operation: String, extra: String? = nil, file: String? = nil) -> TLSError {
        var parts: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        if let extra { parts.append(extra) }
        return TLSError(kind, operation: operation, detail: parts.joined(separator: "; "), file: file)
    }
}
