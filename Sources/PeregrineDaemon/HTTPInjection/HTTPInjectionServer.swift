import Foundation
import PeregrineIO
import PeregrineHTTP
import PeregrineSMTP
import PeregrineTLS
import PeregrineConfig
import PeregrineSpool
import PeregrineDKIM

/// The HTTP injection API (issue 16) on one loop: `http-injection-listener`
/// served by a `ManagementServer` per loop (SO_REUSEPORT, like the SMTP
/// listeners), each request answered only after the spool commit of every
/// message it queued, exactly as SMTP's 250 is.
///
/// Per request: API key (PBKDF2 checked once off the loop, then a keyed
/// SHA-256 cache: `SMTPAuthenticator`), JSON parsed and every field checked,
/// the key's rights applied, every message built and DKIM-signed, the rate
/// charged, and only then the first spool append: an error leaves nothing
/// queued. The messages go through `LoopWorker.accept`, the same spool
/// append, `r` record (rcvSmtpUser `api-key:NAME`) and dispatch as SMTP.
final class HTTPInjectionServer<Loop: EventLoop> {
    unowned let worker: LoopWorker<Loop>
    private var server: ManagementServer<Loop>?

    init(worker: LoopWorker<Loop>) { self.worker = worker }

    var boundAddress: SocketAddress? { server?.boundAddress }

    func start(settings: HTTPInjectionSettings, address: SocketAddress, reusePort: Bool) throws(IOError) {
        let limits = HTTPParserLimits(maxBodyBytes: settings.maxRequestSize)
        var options = ManagementServer<Loop>.Options(
            address: address, limits: limits, idleTimeout: settings.requestTimeout.nanoseconds,
            maxConnections: settings.maxConnections, keepAlive: true, reusePort: reusePort,
            parseErrorResponse: { error in
                let code: String
                switch error.status {
                case 413: code = "request_too_large"
                case 431: code = "headers_too_large"
                case 414: code = "uri_too_long"
                case 501: code = "not_implemented"
                case 505: code = "http_version_not_supported"
                default: code = "bad_request"
                }
                return APIError(error.status, code, error.reason).response
            })
        if settings.tls {
            // The worker's context, swapped by a reload: new connections use renewed files.
            options.makeSecurity = { [unowned self] in
                guard let context = self.worker.serverTLSContext else { return nil }
                return HTTPInjectionTLS(context: context)
            }
        }
        let s = ManagementServer(loop: worker.loop, options: options) { [unowned self] request, respond in
            self.handle(request, respond)
        }
        s.onError = { [unowned self] e in self.worker.daemon.logDetail("http-injection: \(e)") }
        try s.start()
        server = s
    }

    func stop() {
        server?.stop()
        server = nil
    }

    /// Shutdown: no new connection; a request being committed gets its
    /// answer; a request arriving meanwhile gets 503 `shutting_down` with
    /// Retry-After (`prepare`: the worker is shutting down); idle keep-alive
    /// connections close at `deadline`. `done` once no connection is left.
    func drain(deadline: UInt64, _ done: @escaping () -> Void) {
        guard let server else { done(); return }
        server.drain(deadline: deadline) { [weak self] in
            self?.server = nil
            done()
        }
    }

    // MARK: Routing

    func handle(_ request: HTTPRequest, _ respond: @escaping (HTTPResponse) -> Void) {
        switch (request.method, request.path) {
        case ("GET", "/api/v1/openapi.json"), ("HEAD", "/api/v1/openapi.json"):
            respond(HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: OpenAPIDocument.bytes))
        case ("POST", "/api/v1/messages"):
            authenticate(request) { [unowned self] result in
                switch result {
                case .failure(let e): respond(e.response)
                case .success(let key): self.inject(request, key: key, respond)
                }
            }
        case (_, "/api/v1/messages"):
            var r = APIError(405, "method_not_allowed", "use POST").response
            r.headers.append(("Allow", "POST"))
            respond(r)
        case (_, "/api/v1/openapi.json"):
            var r = APIError(405, "method_not_allowed", "use GET").response
            r.headers.append(("Allow", "GET, HEAD"))
            respond(r)
        default:
            respond(APIError(404, "not_found", "no such resource: \(String(request.path.prefix(200)))").response)
        }
    }

    // MARK: Authentication

    /// `Authorization: Bearer NAME:SECRET` or `Basic base64(NAME:SECRET)`.
    static func credentials(_ header: String?) -> (name: String, secret: String)? {
        guard let h = header else { return nil }
        let parts = h.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased()
        let value = String(parts[1]).trimmingCharacters(of: " \t")
        let pair: String
        if scheme == "bearer" {
            pair = value
        } else if scheme == "basic", let decoded = Base64.decode(value.utf8), let s = String(validating: decoded, as: UTF8.self) {
            pair = s
        } else {
            return nil
        }
        guard let colon = pair.firstIndex(of: ":") else { return nil }
        let name = String(pair[..<colon]), secret = String(pair[pair.index(after: colon)...])
        return name.isEmpty || secret.isEmpty ? nil : (name, secret)
    }

    private func authenticate(_ request: HTTPRequest, _ done: @escaping (Result<APIKeySettings, APIError>) -> Void) {
        let config = worker.policies.config
        guard let (name, secret) = Self.credentials(request.header("Authorization")) else {
            done(.failure(APIError(401, "unauthorized", "send 'Authorization: Bearer KEYNAME:SECRET' with an <api-key>'s name and secret")))
            return
        }
        let authenticator = worker.daemon.smtpAuth
        let ip = request.remoteAddress?.ip ?? "?"
        let now = worker.loop.now
        if authenticator.isLockedOut(ip: ip, now: now) {
            done(.failure(APIError(429, "locked_out", "too many failed authentication attempts from this address, try again later",
                                   retryAfter: Int(config.auth.lockoutTime.components.seconds))))
            return
        }
        guard authenticator.beginAttempt(ip: ip, limit: config.auth.lockoutFailures) else {
            done(.failure(APIError(429, "too_many_attempts", "too many authentication attempts under way from this address",
                                   retryAfter: 1)))
            return
        }
        let key = config.httpInjection.key(named: name)
        // The same check as an SMTP login (cache and decoy hash for unknown names included).
        let user = key.map { SMTPUserSettings(name: $0.name, secret: .hashed($0.secret)) }
        authenticator.verify(user: user, password: secret, on: worker.loop) { [unowned self] ok in
            authenticator.endAttempt(ip: ip)
            if ok, let key {
                done(.success(key))
                return
            }
            self.worker.authFailures += 1
            let unauthorized = APIError(401, "unauthorized", "the API key name or secret is wrong")
            switch authenticator.recordFailure(ip: ip, now: self.worker.loop.now, policy: config.auth) {
            case .lockedOut:
                self.worker.daemon.log("http-injection: \(ip) locked out for \(config.auth.lockoutTime) after "
                                       + "\(config.auth.lockoutFailures) failed authentications (last as '\(name)')")
                done(.failure(unauthorized))
            case .delay(let ns):
                if ns == 0 { done(.failure(unauthorized)); return }
                _ = self.worker.loop.scheduleTimer(after: ns) { done(.failure(unauthorized)) }
            }
        }
    }

    // MARK: Injection

    /// One message to append: the body is final (headers added, signed).
    private struct Pending {
        var recipients: [Int]        // indexes into the request's recipients
        var body: [UInt8]
        var vmta: String
        var pool: String?
    }

    private func inject(_ request: HTTPRequest, key: APIKeySettings, _ respond: @escaping (HTTPResponse) -> Void) {
        let result: Result<[Pending], APIError>
        let parsed: HTTPInjectionRequest
        do throws(APIError) {
            guard ManagementRequestGuard.mediaType(request.header("Content-Type")) == "application/json" else {
                throw APIError(415, "unsupported_media_type", "the body must be application/json")
            }
            var r = try HTTPInjectionRequest.parse(body: request.body, maxRecipients: key.maxRecipients)
            // The key's tenant is the request's: its suppression scope and X-Tenant-ID.
            if let keyTenant = key.tenant {
                if let asked = r.tenant, asked.lowercased() != keyTenant.lowercased() {
                    throw APIError(403, "tenant_not_allowed", "this key sends for tenant '\(keyTenant)' only", field: "tenant")
                }
                r.tenant = keyTenant
            }
            parsed = r
            result = .success(try prepare(parsed, key: key, peer: request.remoteAddress))
        } catch {
            respond(error.response)
            return
        }
        guard case .success(let pending) = result else { return }
        commit(pending, parsed, key: key, peer: request.remoteAddress, respond)
    }

    /// The suppression list (issue 16): a reason to refuse `address`, or nil
    /// to queue it. Refused recipients are listed in the response with status
    /// "rejected" and this reason; the rest are queued. No record here: the
    /// `s` record is written with the response, once the request succeeded.
    func recipientRefusal(_ address: String, tenant: String?) -> String? {
        let scope = tenant.flatMap { SuppressionKey.normaliseTenant($0) }
        guard let match = worker.daemon.suppression?.match(recipient: address, tenant: scope) else { return nil }
        return Daemon<Loop>.suppressedReply(address, match.reason, tenant: match.scoped ? tenant : nil).lines.joined(separator: " ")
    }

    /// Everything short of the spool: rights, message bytes, DKIM, rate. Throws the first error.
    private func prepare(_ r: HTTPInjectionRequest, key: APIKeySettings, peer: SocketAddress?) throws(APIError) -> [Pending] {
        let config = worker.policies.config
        if worker.isShuttingDown || worker.daemon.isShuttingDown {
            throw APIError(503, "shutting_down", "the server is shutting down; try again later", retryAfter: 5)
        }
        guard let spool = worker.primarySpool, spool.health.isOK else {
            throw APIError(503, "spool_unavailable", "the spool cannot take messages now (\(worker.primarySpool?.health.name ?? "none")); "
                           + "try again later", retryAfter: 30)
        }
        // Sender rights.
        let senderDomain = domain(of: r.sender)
        guard key.allowsSender(domain: senderDomain) else {
            throw APIError(403, "sender_not_allowed", "this key may not send as \(senderDomain)", field: "sender")
        }
        if case .structured(let c) = r.content, !key.allowsSender(domain: domain(of: c.from.address)) {
            throw APIError(403, "sender_not_allowed", "this key may not send as \(domain(of: c.from.address))", field: "content.from")
        }
        let vmtaName = r.virtualMTA ?? key.defaultVirtualMTA ?? worker.defaultVMTA
        guard config.virtualMTA(named: vmtaName) != nil || config.pool(named: vmtaName) != nil
                || (vmtaName == ConfigPolicySource.defaultVMTAName && config.virtualMTAs.isEmpty) else {
            throw APIError(422, "unknown_virtual_mta", "'\(vmtaName)' is not a <virtual-mta> or <virtual-mta-pool>",
                           field: r.virtualMTA == nil ? nil : "virtual_mta")
        }
        // Which recipients are queued, and how they group into messages.
        let accepted = r.recipients.indices.filter { recipientRefusal(r.recipients[$0].address, tenant: r.tenant) == nil }
        var groups: [[Int]]
        var perRecipient = r.hasSubstitutions
        if case .structured(let c) = r.content, c.to.isEmpty { perRecipient = true }  // To: is each recipient
        groups = perRecipient ? accepted.map { [$0] } : (accepted.isEmpty ? [] : [accepted])
        if !groups.isEmpty, case .raw(let raw) = r.content, !r.hasSubstitutions,
           !key.allowedSenderDomains.isEmpty {
            let from = raw.withUnsafeBytes { DKIMMessageHeaders.fromDomain($0) } ?? ""
            guard key.allowsSender(domain: from) else {
                throw APIError(403, "sender_not_allowed", "this key may not send with From domain '\(from)'", field: "raw")
            }
        }
        // Build and sign every message before anything is charged or queued.
        var source = SourceSettings()
        source.dkim = key.dkim
        if r.dkim == false { source.dkim.sign = false }
        let now = wallClockSeconds()
        var out: [Pending] = []
        out.reserveCapacity(groups.count)
        for group in groups {
            let first = r.recipients[group[0]]
            var message = try messageBytes(r, recipient: first, perRecipient: perRecipient, now: now)
            if key.maxMessageSize > 0, message.count > key.maxMessageSize {
                var isRaw = false
                if case .raw = r.content { isRaw = true }
                throw APIError(413, "message_too_large", "the message is \(message.count) bytes, over this key's "
                               + "max-message-size of \(key.maxMessageSize)", field: isRaw ? "raw" : "content")
            }
            if case .raw = r.content, perRecipient, !key.allowedSenderDomains.isEmpty {
                let from = message.withUnsafeBytes { DKIMMessageHeaders.fromDomain($0) } ?? ""
                guard key.allowsSender(domain: from) else {
                    throw APIError(403, "sender_not_allowed", "this key may not send with From domain '\(from)'", field: "raw")
                }
            }
            guard let vmta = worker.pickVMTA(vmtaName) else {
                throw APIError(422, "unknown_virtual_mta", "'\(vmtaName)' has no usable member", field: "virtual_mta")
            }
            if config.dkimConfigured {
                let outcome = message.withUnsafeBytes {
                    worker.dkim.sign($0, config: config, source: source, vmta: vmta,
                                     recipientDomain: domain(of: first.address), now: now)
                }
                switch outcome {
                case .refused(let reply):
                    throw APIError(422, "dkim_refused", reply.lines.joined(separator: " "), field: "dkim")
                case .signed:
                    message = worker.dkim.header + message
                case .unsigned:
                    break
                }
            }
            message = receivedHeader(peer: peer, key: key, recipient: perRecipient ? first.address : nil, now: now) + message
            out.append(Pending(recipients: group, body: message, vmta: vmta, pool: config.pool(named: vmtaName)?.name))
        }
        // The key's rate, charged per message, last: a refused request costs nothing.
        if key.maxMsgRate != .unlimited, !out.isEmpty {
            if let wait = worker.daemon.apiKeyRates.acquire(key.name, rate: key.maxMsgRate, cost: out.count, now: worker.loop.now) {
                let seconds = Int((wait + 999_999_999) / 1_000_000_000)
                throw APIError(429, "rate_limited", "this key's max-msg-rate \(key.maxMsgRate) is exceeded; "
                               + "retry after \(seconds)s", retryAfter: max(1, seconds))
            }
        }
        return out
    }

    private func domain(of address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return "" }
        return address[address.index(after: at)...].lowercased()
    }

    /// The message for one group (see `HTTPInjectionRequest.message`).
    private func messageBytes(_ r: HTTPInjectionRequest, recipient: HTTPInjectionRequest.Recipient, perRecipient: Bool,
                              now: Int64) throws(APIError) -> [UInt8] {
        try r.message(for: recipient, perRecipient: perRecipient, hostName: worker.daemon.hostName,
                      date: RFC5322DateTime.format(now), token: Self.uniqueToken)
    }

    /// 24 hex digits from the CSPRNG (or the clock if it failed): Message-ID and boundaries.
    static func uniqueToken() -> String {
        let bytes = randomBytes(12) ?? withUnsafeBytes(of: DispatchTime.now().uptimeNanoseconds) { Array($0) }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    private func receivedHeader(peer: SocketAddress?, key: APIKeySettings, recipient: String?, now: Int64) -> [UInt8] {
        var h = "Received: from [\(peer?.ip ?? "unknown")]\r\n\tby \(worker.daemon.hostName) (Peregrine) with HTTP"
            + " (api-key \(receivedHeaderText(key.name)))"
        if let r = recipient { h += "\r\n\tfor <\(receivedHeaderText(r))>" }
        h += "; \(RFC5322DateTime.format(now))\r\n"
        return Array(h.utf8)
    }

    /// Appends every message; answers once all are durable (or one failed).
    private func commit(_ pending: [Pending], _ r: HTTPInjectionRequest, key: APIKeySettings, peer: SocketAddress?,
                        _ respond: @escaping (HTTPResponse) -> Void) {
        var ids = [String?](repeating: nil, count: pending.count)
        var failure: String?
        var remaining = pending.count
        let peerAddress = peer ?? worker.listenerAddresses.first ?? .v4(.init())
        func finish() {
            var items: [JSONValue] = []
            var recipientMessage = [Int: Int]()
            for (m, p) in pending.enumerated() { for i in p.recipients { recipientMessage[i] = m } }
            var queued = 0, rejected = 0
            for (i, rc) in r.recipients.enumerated() {
                var item: [(key: String, value: JSONValue)] = [("recipient", .string(rc.address))]
                if let m = recipientMessage[i] {
                    if let id = ids[m] {
                        item += [("status", .string("queued")), ("message_id", .string(id))]
                        queued += 1
                    } else {
                        item += [("status", .string("failed")), ("reason", .string(failure ?? "not queued"))]
                    }
                } else {
                    let reason = worker.daemon.suppressionRefusal(recipient: rc.address, sender: r.sender,
                                                                  peer: peerAddress.ip, srcType: "api", tenant: r.tenant)
                    item += [("status", .string("rejected")), ("reason", .string(reason ?? "refused"))]
                    rejected += 1
                }
                items.append(.object(item))
            }
            var body: [(key: String, value: JSONValue)] = [("queued", .int(queued)), ("rejected", .int(rejected)),
                                                           ("recipients", .array(items))]
            if let failure {
                // Some messages may be durable already: they will be delivered, and the list says which.
                body.insert(("error", .object([("code", .string("spool_unavailable")),
                                               ("message", .string("the spool failed: \(failure); recipients marked "
                                                                   + "'queued' were committed and will be delivered"))])), at: 0)
                var resp = HTTPResponse.json(JSONValue.object(body).serialized, status: 503)
                resp.headers.append(("Retry-After", "30"))
                respond(resp)
            } else {
                respond(HTTPResponse.json(JSONValue.object(body).serialized, status: 200))
            }
        }
        if pending.isEmpty { finish(); return }
        let user = "api-key:" + key.name
        for (m, p) in pending.enumerated() {
            let envelope = SpoolEnvelope(
                sender: Array(r.sender.utf8),
                recipients: p.recipients.map { SpoolRecipient(address: Array(r.recipients[$0].address.utf8)) },
                vmta: Array(p.vmta.utf8), jobID: Array((r.jobID ?? "").utf8), envID: [], ret: .unspecified,
                receivedAt: wallClockMilliseconds(), verp: key.verpDefault)
            p.body.withUnsafeBytes { body in
                worker.accept(envelope: envelope, body: body, peer: peerAddress, pool: p.pool, smtpUser: user) { result in
                    switch result {
                    case .success(let id): ids[m] = "\(id)"
                    case .failure(let e):
                        // The client learns what failed, not the spool's paths (the log and /status have those).
                        switch e {
                        case .invalidMessage(let why): failure = failure ?? why
                        case .loop(_, let io): failure = failure ?? "spool: \(io)"
                        default: failure = failure ?? "spool unavailable"
                        }
                    }
                    remaining -= 1
                    if remaining == 0 { finish() }
                }
            }
        }
    }
}

/// `max-msg-rate` of `<api-key>`: one GCRA limiter per key shared by every
/// loop (a client's connections land on any loop), charged per message, and
/// telling how long to wait (`Retry-After`).
final class APIKeyRateLimits: @unchecked Sendable {
    private let lock = NSLock()
    private var limiters: [String: RateLimiter] = [:]

    /// nil when `cost` messages may go now (and charges them), else nanoseconds until they may.
    func acquire(_ key: String, rate: Rate, cost: Int, now: UInt64) -> UInt64? {
        lock.withLock {
            var limiter = limiters[key].flatMap { $0.rate == rate ? $0 : nil } ?? RateLimiter(rate: rate)
            defer { limiters[key] = limiter }
            if limiter.tryAcquire(now: now, cost: cost) { return nil }
            return max(limiter.nextAllowed(now: now, cost: cost) &- now, 1)
        }
    }
}
