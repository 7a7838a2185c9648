import PeregrineHTTP
import PeregrineTLS

/// `http-injection-listener ADDR:PORT tls=yes`: TLS from the first byte on
/// an API connection, with the injection listeners' certificate
/// (`smtp-server-tls-certificate`/`-key`, re-read on reload as for STARTTLS).
/// The `TLSConnection` memory-BIO transform between the socket and the HTTP
/// parser. The 16 KiB plaintext buffer is allocated once the handshake is
/// done, so a client stalled mid-handshake holds only OpenSSL's state and the
/// server's receive buffer until `http-injection-timeout` closes it.
final class HTTPInjectionTLS: HTTPConnectionSecurity {
    private let tls: TLSConnection
    private var plaintext: UnsafeMutableRawBufferPointer?

    init?(context: TLSContext) {
        guard let connection = try? context.makeServerConnection() else { return nil }
        tls = connection
    }

    deinit { plaintext?.deallocate() }

    func receive(_ bytes: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) -> Void) -> Bool {
        tls.feedCiphertext(bytes)
        if !tls.isHandshakeComplete {
            switch tls.handshake() {
            case .wantIO: return true
            case .failed: return false
            case .done: break
            }
        }
        let buffer: UnsafeMutableRawBufferPointer
        if let p = plaintext { buffer = p } else {
            buffer = .allocate(byteCount: 16384, alignment: 16)  // one TLS record
            plaintext = buffer
        }
        while true {
            let n: Int
            do { n = try tls.readPlaintext(into: buffer) } catch { return false }
            if n == 0 { return true }
            deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    func takeOutgoing() -> [UInt8] {
        let pending = tls.pendingCiphertextBytes
        guard pending > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: pending)
        let n = out.withUnsafeMutableBytes { tls.takeCiphertext(into: $0) }
        out.removeSubrange(n...)
        return out
    }

    func seal(_ plaintext: [UInt8], closing: Bool) -> [UInt8]? {
        let written = plaintext.withUnsafeBytes { bytes -> Bool in
            do { try tls.writePlaintext(bytes); return true } catch { return false }
        }
        guard written else { return nil }
        if closing { tls.close() }
        return takeOutgoing()
    }

    var peerClosed: Bool { tls.receivedCloseNotify }
}
