import PeregrineIO
import PeregrineSMTP
import PeregrineTLS
import PeregrineTransport

/// STARTTLS state of one delivery engine (one loop): the client context,
/// shared by every loop so a reconnect anywhere resumes the MX's session,
/// and the MX hosts whose handshake failed, which opportunistic queues
/// reach in plain text until the memory expires.
public final class DeliveryTLS {
    /// The client context (nil: no STARTTLS on delivery at all).
    public var context: TLSContext?
    /// How long an MX whose handshake failed is used in plain text (opportunistic mode): 1 h.
    public var fallbackDuration: UInt64 = 3_600_000_000_000
    /// MX host name (lower-cased) → monotonic time until which it gets plain text.
    private var plainUntil: [String: UInt64] = [:]

    public init() {}

    /// The STARTTLS component for a new connection to `host`, or nil for plain text.
    func client(for host: RouteHost, policy: DomainSettings, now: UInt64) -> SMTPClientTLS? {
        if policy.requireStartTLS {
            return SMTPClientTLS(policy: .required, context: context, serverName: Self.sniName(host.name),
                                 verifyHostname: policy.tlsVerifyHostname ? host.name : nil, sessionKey: host.name)
        }
        guard policy.useStartTLS, context != nil, !isPlain(host.name, now: now) else { return nil }
        return SMTPClientTLS(policy: .opportunistic, context: context, serverName: Self.sniName(host.name),
                             verifyHostname: policy.tlsVerifyHostname ? host.name : nil, sessionKey: host.name)
    }

    /// True while `host` is remembered as unable to complete a handshake.
    public func isPlain(_ host: String, now: UInt64) -> Bool {
        let key = host.lowercased()
        guard let until = plainUntil[key] else { return false }
        if now < until { return true }
        plainUntil[key] = nil
        return false
    }

    /// Remembers that `host` failed the handshake: plain text for `fallbackDuration`.
    public func rememberHandshakeFailure(_ host: String, now: UInt64) {
        plainUntil[host.lowercased()] = now &+ fallbackDuration
        context?.forgetSession(for: host)
    }

    /// MX hosts currently sent plain text.
    public var plainHosts: [String] { plainUntil.keys.sorted() }

    /// SNI carries DNS names only (RFC 6066 §3): none for an address literal.
    static func sniName(_ host: String) -> String? {
        (try? SocketAddress(ip: host, port: 0)) == nil ? host : nil
    }
}

extension DeliveryEngine {
    /// A connection's STARTTLS attempt failed. `handshake`: it failed during
    /// the handshake (else STARTTLS was not offered or was refused).
    /// Opportunistic: a failed handshake sends this MX plain text for a while
    /// (the next connection, opened as the queue is kicked, uses it).
    /// Required: the queue waits its retry interval in retry mode, its mail
    /// in place (a `t` record with the reason for each item not held before;
    /// see `holdReadyMail`).
    func tlsFailed(on c: DeliveryConnection<Loop>, host: RouteHost, required: Bool, handshake: Bool, why: String,
                   info: DeliveryAttemptInfo?) {
        let q = c.queue
        let now = loop.now
        guard required else {
            if handshake {
                tls.rememberHandshakeFailure(host.name, now: now)
                q.lastReply = "TLS handshake with \(host.name) failed (\(why)); plain text for \(tls.fallbackDuration / 1_000_000_000)s"
            }
            return
        }
        let reply = SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 7, 10),
                              "TLS required but not available from \(host.name) (\(why))")
        // A site's connection carries every member's mail (same TLS settings by the site key).
        holdReadyMail(of: q, reply: reply, info: info, now: now)
        let delay = q.policy.retryAfter(inBackoff: q.isBackoff).delay(afterFailures: 1).nanoseconds
        q.suspend(until: now &+ delay, reason: reply.description)
    }
}
