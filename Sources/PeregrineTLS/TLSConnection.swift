import COpenSSL
import PeregrineIO

/// One TLS session as a sans-I/O byte transform: an `SSL` between two memory
/// BIOs. It never touches a socket; its owner moves the bytes:
///
/// - socket → `feedCiphertext(_:)`, then `handshake()` until `.done`, then
///   `readPlaintext(into:)` until it returns 0;
/// - `writePlaintext(_:)` (after the handshake) → `takeCiphertext(into:)` →
///   socket, whenever `pendingCiphertextBytes > 0` (also after `handshake()`,
///   `readPlaintext` and `close()`: TLS writes records of its own).
///
/// The memory BIOs keep their buffers across records, so steady-state
/// traffic does not allocate per record. Not thread-safe: one loop owns it.
public final class TLSConnection {
    public enum HandshakeResult: Equatable {
        /// The handshake is complete; plaintext may flow.
        case done
        /// Move bytes: send `pendingCiphertextBytes`, feed what the peer sends, call again.
        case wantIO
        /// Failed; an alert for the peer may be pending in the ciphertext.
        case failed(TLSError)
    }

    public let context: TLSContext
    public let isServer: Bool
    /// Client: where new sessions are stored / resumed from.
    let sessionKey: String?

    private let ssl: OpaquePointer
    /// Network → TLS (we write ciphertext into it).
    private let inBIO: OpaquePointer
    /// TLS → network (we read ciphertext out of it).
    private let outBIO: OpaquePointer
    private var scratch: UnsafeMutableRawBufferPointer?
    public private(set) var isHandshakeComplete = false
    /// The handshake or a later record failed; the connection is unusable.
    public private(set) var failure: TLSError?

    init(context: TLSContext, isServer: Bool, serverName: String?, verifyHostname: String?,
         sessionKey: String?) throws(TLSError) {
        self.context = context
        self.isServer = isServer
        self.sessionKey = isServer ? nil : sessionKey
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { throw TLSError.fromQueue(.configuration, "SSL_new") }
        guard let inBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError.fromQueue(.configuration, "BIO_new")
        }
        guard let outBIO = BIO_new(BIO_s_mem()) else {
            BIO_free(inBIO); SSL_free(ssl)
            throw TLSError.fromQueue(.configuration, "BIO_new")
        }
        // An empty input BIO means "more to come", not end of file.
        _ = peregrine_BIO_set_mem_eof_return(inBIO, -1)
        _ = peregrine_BIO_set_mem_eof_return(outBIO, -1)
        SSL_set_bio(ssl, inBIO, outBIO) // ssl owns both BIOs now
        self.ssl = ssl
        self.inBIO = inBIO
        self.outBIO = outBIO
        // Everything that can throw below runs after all stored properties
        // are set, so deinit frees `ssl`.
        if isServer {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            // The new-session callback finds this connection (unretained: the
            // callback only runs inside our own SSL_* calls).
            _ = peregrine_SSL_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())
            if let serverName, !serverName.isEmpty, peregrine_SSL_set_tlsext_host_name(ssl, serverName) != 1 {
                throw TLSError.fromQueue(.configuration, "SNI \(serverName)")
            }
            if let verifyHostname {
                guard context.canVerifyPeers else {
                    throw TLSError(.configuration, operation: "verify \(verifyHostname)",
                                   detail: "the client context has no trust store")
                }
                guard SSL_set1_host(ssl, verifyHostname) == 1 else {
                    throw TLSError.fromQueue(.configuration, "verify \(verifyHostname)")
                }
                SSL_set_verify(ssl, SSL_VERIFY_PEER, nil)
            }
            if let key = self.sessionKey, let session = context.cachedSession(for: key) {
                _ = SSL_set_session(ssl, session)
                SSL_SESSION_free(session) // SSL_set_session took its own reference
            }
        }
    }

    deinit {
        SSL_free(ssl)
        scratch?.deallocate()
    }

    // MARK: Bytes in

    /// Hands ciphertext received from the peer to TLS (copied).
    public func feedCiphertext(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes
        while !rest.isEmpty, let base = rest.baseAddress {
            let chunk = min(rest.count, Int(Int32.max))
            let n = BIO_write(inBIO, base, Int32(chunk))
            guard n > 0 else { return } // a memory BIO only fails when out of memory
            rest = UnsafeRawBufferPointer(rebasing: rest[Int(n)...])
        }
    }

    /// Drives the handshake as far as the bytes fed so far allow.
    public func handshake() -> HandshakeResult {
        if isHandshakeComplete { return .done }
        if let failure { return .failed(failure) }
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            isHandshakeComplete = true
            return .done
        }
        switch SSL_get_error(ssl, r) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantIO
        default:
            var extra: String?
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK, let s = X509_verify_cert_error_string(verify) {
                extra = "certificate verification: " + String(cString: s)
            }
            let e = TLSError.fromQueue(.handshake, "SSL_do_handshake", extra: extra)
            failure = e
            if let key = sessionKey { context.forgetSession(for: key) }
            return .failed(e)
        }
    }

    /// Decrypts into `buffer`. Returns the number of plaintext bytes; 0 means
    /// nothing more until more ciphertext is fed (or the peer sent
    /// close_notify: see `receivedCloseNotify`). Call until it returns 0.
    public func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> Int {
        if let failure { throw failure }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var n = 0
        let r = SSL_read_ex(ssl, base, buffer.count, &n)
        if r == 1 {
            isHandshakeComplete = true
            return n
        }
        switch SSL_get_error(ssl, r) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE, SSL_ERROR_ZERO_RETURN:
            return 0
        default:
            let e = TLSError.fromQueue(isHandshakeComplete ? .protocolFailure : .handshake, "SSL_read")
            failure = e
            throw e
        }
    }

    // MARK: Bytes out

    /// Encrypts all of `bytes` into pending ciphertext. Only after the handshake.
    public func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws(TLSError) {
        if let failure { throw failure }
        guard isHandshakeComplete else {
            throw TLSError(.notReady, operation: "SSL_write", detail: "handshake not complete")
        }
        var rest = bytes
        while !rest.isEmpty, let base = rest.baseAddress {
            var n = 0
            guard SSL_write_ex(ssl, base, rest.count, &n) == 1 else {
                let e = TLSError.fromQueue(.protocolFailure, "SSL_write")
                failure = e
                throw e
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    /// Ciphertext waiting to be sent to the peer.
    public var pendingCiphertextBytes: Int { Int(peregrine_BIO_pending(outBIO)) }

    /// Moves up to `buffer.count` bytes of pending ciphertext into `buffer`
    /// (an owner's send buffer). Returns the count (0 when none is pending).
    public func takeCiphertext(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = BIO_read(outBIO, base, Int32(min(buffer.count, Int(Int32.max))))
        return n > 0 ? Int(n) : 0
    }

    /// Appends all pending ciphertext to `buffer`. Returns the count.
    @discardableResult
    public func takeCiphertext(appendingTo buffer: inout ByteBuffer) -> Int {
        let chunk: UnsafeMutableRawBufferPointer
        if let s = scratch { chunk = s } else { chunk = .allocate(byteCount: 16384, alignment: 16); scratch = chunk }
        var total = 0
        while true {
            let n = takeCiphertext(into: chunk)
            if n == 0 { return total }
            buffer.append(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            total += n
        }
    }

    // MARK: Closing

    /// Queues a close_notify alert (send the pending ciphertext, then close the socket).
    public func close() {
        guard failure == nil, isHandshakeComplete else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// The peer sent close_notify.
    public var receivedCloseNotify: Bool { (SSL_get_shutdown(ssl) & Int32(SSL_RECEIVED_SHUTDOWN)) != 0 }

    // MARK: What was negotiated

    /// "TLSv1.3", "TLSv1.2", … (after the handshake).
    public var negotiatedProtocol: String? {
        guard isHandshakeComplete, let v = SSL_get_version(ssl) else { return nil }
        return String(cString: v)
    }

    /// OpenSSL's cipher name, e.g. "TLS_AES_256_GCM_SHA384".
    public var negotiatedCipher: String? {
        guard isHandshakeComplete, let c = SSL_get_current_cipher(ssl), let n = SSL_CIPHER_get_name(c) else { return nil }
        return String(cString: n)
    }

    /// The SNI name the client sent (server side), or that this client sends.
    public var serverName: String? {
        guard let n = SSL_get_servername(ssl, Int32(TLSEXT_NAMETYPE_host_name)) else { return nil }
        return String(cString: n)
    }

    /// The handshake resumed an earlier session (abbreviated handshake).
    public var wasResumed: Bool { isHandshakeComplete && SSL_session_reused(ssl) == 1 }

    /// Client with verification: the peer's certificate chain and name checked out.
    public var peerVerified: Bool {
        isHandshakeComplete && SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER != 0 && SSL_get_verify_result(ssl) == X509_V_OK
    }
}
