import COpenSSL
import Synchronization

/// A TLS protocol version bound.
public enum TLSVersion: Sendable, Equatable {
    case tls12, tls13

    var openSSLValue: Int32 {
        switch self {
        case .tls12: return peregrine_TLS1_2_VERSION()
        case .tls13: return peregrine_TLS1_3_VERSION()
        }
    }
}

/// Where a client finds the CAs it trusts when it verifies a peer.
public enum TLSTrustStore: Sendable, Equatable {
    /// OpenSSL's default locations (Debian: /etc/ssl/certs).
    case system
    /// A PEM bundle.
    case file(String)
}

/// One `SSL_CTX`: the shared, thread-safe half of TLS. Build it at start-up
/// (a server context per certificate, one client context for delivery) and
/// share it between loops; `makeConnection` creates the per-connection
/// `TLSConnection`, which keeps its context alive. A reload builds a new
/// server context; the old one is freed when its last connection ends.
///
/// Server: certificate chain + key, TLS 1.2 and 1.3 (older versions off),
/// OpenSSL's default ciphers (server preference), a session cache and
/// session tickets so returning clients resume without a full handshake.
///
/// Client: opportunistic by default (no verification — what MTAs do for
/// STARTTLS unless told otherwise); with a trust store, a connection may ask
/// for the peer's certificate to be verified against a host name. SNI is sent
/// when a server name is given. Sessions are cached per key (the MX host) so a
/// reconnect to the same host resumes.
public final class TLSContext: @unchecked Sendable {
    public enum Role: Sendable { case server, client }

    public let role: Role
    /// True when the context has a trust store (client verification possible).
    public let canVerifyPeers: Bool
    let ctx: OpaquePointer

    /// Client session cache: key → SSL_SESSION (one reference held per entry).
    private let sessions = Mutex<SessionCache>(SessionCache())
    private let sessionCacheLimit: Int

    struct SessionCache: @unchecked Sendable {
        var byKey: [String: OpaquePointer] = [:]
    }

    private init(ctx: OpaquePointer, role: Role, canVerifyPeers: Bool, sessionCacheLimit: Int) {
        self.ctx = ctx
        self.role = role
        self.canVerifyPeers = canVerifyPeers
        self.sessionCacheLimit = sessionCacheLimit
    }

    deinit {
        sessions.withLock { cache in
            for (_, s) in cache.byKey { SSL_SESSION_free(s) }
            cache.byKey.removeAll()
        }
        SSL_CTX_free(ctx)
    }

    // MARK: Building

    /// A server context from PEM files: `certificateFile` holds the leaf
    /// certificate followed by any intermediates; `keyFile` its private key.
    public static func server(certificateFile: String, keyFile: String,
                              minimumVersion: TLSVersion = .tls12, maximumVersion: TLSVersion? = nil,
                              cipherList: String? = nil, sessionCacheSize: Int = 20480) throws(TLSError) -> TLSContext {
        let ctx = try makeContext(minimumVersion: minimumVersion, maximumVersion: maximumVersion, cipherList: cipherList)
        // From here on `context` owns ctx (its deinit frees it on a throw).
        let context = TLSContext(ctx: ctx, role: .server, canVerifyPeers: false, sessionCacheLimit: 0)
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1 else {
            throw TLSError.fromQueue(.configuration, "certificate \(certificateFile)", file: certificateFile)
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError.fromQueue(.configuration, "private key \(keyFile)", file: keyFile)
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError.fromQueue(.configuration, "key \(keyFile) does not match certificate \(certificateFile)",
                                     file: keyFile)
        }
        _ = SSL_CTX_set_options(ctx, peregrine_SSL_OP_CIPHER_SERVER_PREFERENCE())
        // Resumption: an internal session cache (TLS 1.2 session ids) plus
        // stateless tickets (1.2 and 1.3). One 1.3 ticket per handshake is
        // enough for an MTA that reconnects one connection at a time.
        var sidContext: [UInt8] = Array("peregrine-smtp".utf8)
        _ = SSL_CTX_set_session_id_context(ctx, &sidContext, UInt32(sidContext.count))
        _ = peregrine_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_SERVER))
        _ = peregrine_SSL_CTX_sess_set_cache_size(ctx, sessionCacheSize)
        _ = SSL_CTX_set_num_tickets(ctx, 1)
        return context
    }

    /// A client context. With `trustStore` nil the client never verifies
    /// (opportunistic STARTTLS); with a trust store a connection verifies
    /// when it is given a host name to verify.
    public static func client(trustStore: TLSTrustStore? = nil,
                              minimumVersion: TLSVersion = .tls12, maximumVersion: TLSVersion? = nil,
                              cipherList: String? = nil, sessionCacheLimit: Int = 4096) throws(TLSError) -> TLSContext {
        let ctx = try makeContext(minimumVersion: minimumVersion, maximumVersion: maximumVersion, cipherList: cipherList)
        let context = TLSContext(ctx: ctx, role: .client, canVerifyPeers: trustStore != nil,
                                 sessionCacheLimit: sessionCacheLimit)
        ERR_clear_error()
        switch trustStore {
        case nil:
            break
        case .system:
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw TLSError.fromQueue(.configuration, "system CA store")
            }
        case .file(let path):
            guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
                throw TLSError.fromQueue(.configuration, "CA file \(path)", file: path)
            }
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        // Sessions are kept by our own per-host cache, filled from the
        // new-session callback (TLS 1.3 tickets arrive after the handshake).
        _ = peregrine_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
        SSL_CTX_sess_set_new_cb(ctx, { ssl, session in
            guard let ssl, let session, let raw = peregrine_SSL_get_app_data(ssl) else { return 0 }
            let connection = Unmanaged<TLSConnection>.fromOpaque(raw).takeUnretainedValue()
            guard let key = connection.sessionKey else { return 0 }
            connection.context.storeSession(session, for: key)
            return 1 // we keep the reference
        })
        return context
    }

    private static func makeContext(minimumVersion: TLSVersion, maximumVersion: TLSVersion?,
                                    cipherList: String?) throws(TLSError) -> OpaquePointer {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_method()) else {
            throw TLSError.fromQueue(.configuration, "SSL_CTX_new")
        }
        guard peregrine_SSL_CTX_set_min_proto_version(ctx, minimumVersion.openSSLValue) == 1,
              peregrine_SSL_CTX_set_max_proto_version(ctx, maximumVersion?.openSSLValue ?? 0) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError.fromQueue(.configuration, "protocol version bounds")
        }
        _ = SSL_CTX_set_options(ctx, peregrine_SSL_OP_NO_RENEGOTIATION() | peregrine_SSL_OP_NO_COMPRESSION())
        if let cipherList, SSL_CTX_set_cipher_list(ctx, cipherList) != 1 {
            SSL_CTX_free(ctx)
            throw TLSError.fromQueue(.configuration, "cipher list \"\(cipherList)\"")
        }
        return ctx
    }

    // MARK: Connections

    /// A server-side connection (waits for the ClientHello).
    public func makeServerConnection() throws(TLSError) -> TLSConnection {
        try TLSConnection(context: self, isServer: true, serverName: nil, verifyHostname: nil, sessionKey: nil)
    }

    /// A client-side connection. `serverName` is sent as SNI; `verifyHostname`
    /// turns on certificate verification against that name (needs a trust
    /// store); `sessionKey` (default: the server name) selects the cached
    /// session to resume and where new sessions are stored.
    public func makeClientConnection(serverName: String? = nil, verifyHostname: String? = nil,
                                     sessionKey: String? = nil) throws(TLSError) -> TLSConnection {
        try TLSConnection(context: self, isServer: false, serverName: serverName,
                          verifyHostname: verifyHostname, sessionKey: sessionKey ?? serverName)
    }

    // MARK: Client session cache

    /// Stores `session` (taking over the caller's reference) under `key`.
    func storeSession(_ session: OpaquePointer, for key: String) {
        let old: OpaquePointer? = sessions.withLock { cache in
            if cache.byKey[key] == nil, cache.byKey.count >= sessionCacheLimit, let victim = cache.byKey.first {
                cache.byKey.removeValue(forKey: victim.key)
                SSL_SESSION_free(victim.value)
            }
            return cache.byKey.updateValue(session, forKey: key)
        }
        if let old { SSL_SESSION_free(old) }
    }

    /// A new reference to the cached session for `key`, if it can still resume.
    func cachedSession(for key: String) -> OpaquePointer? {
        sessions.withLock { cache in
            guard let s = cache.byKey[key] else { return nil }
            guard SSL_SESSION_is_resumable(s) == 1 else {
                cache.byKey.removeValue(forKey: key)
                SSL_SESSION_free(s)
                return nil
            }
            _ = SSL_SESSION_up_ref(s)
            return s
        }
    }

    /// Forgets the cached session for `key` (e.g. after a failed handshake).
    public func forgetSession(for key: String) {
        let old = sessions.withLock { $0.byKey.removeValue(forKey: key) }
        if let old { SSL_SESSION_free(old) }
    }

    /// Number of hosts with a cached session (client contexts).
    public var cachedSessionCount: Int { sessions.withLock { $0.byKey.count } }
}
