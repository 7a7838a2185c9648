import PeregrineIO
import PeregrineSMTP
import PeregrineTransport

/// SMTP AUTH for an injection connection: `<smtp-user>` credentials, the
/// per-address failure delay and lockout (`SMTPAuthenticator`), and the
/// rights a login brings (`source {NAME}`).
extension InjectionHandler {
    static var credentialsInvalid: SMTPReply {
        SMTPReply(code: 535, enhancedCode: EnhancedStatusCode(5, 7, 8), "Authentication credentials invalid")
    }
    static var lockedOut: SMTPReply {
        SMTPReply(code: 454, enhancedCode: EnhancedStatusCode(4, 7, 0),
                  "Too many failed authentication attempts from this address, try again later")
    }
    static var tooManyAttempts: SMTPReply {
        SMTPReply(code: 454, enhancedCode: EnhancedStatusCode(4, 7, 0), "Too many authentication attempts under way from this address, try again later")
    }
    static var loginRevoked: SMTPReply {
        SMTPReply(code: 530, enhancedCode: EnhancedStatusCode(5, 7, 0), "Authentication required (the login is no longer configured)")
    }
    static var authRequired: SMTPReply {
        SMTPReply(code: 530, enhancedCode: EnhancedStatusCode(5, 7, 0), "Authentication required")
    }

    /// The `.auth` decision: always answered later (hashing runs off the
    /// loop; failures are answered after their delay).
    func authenticate(_ session: SMTPServerSession, _ credentials: SMTPAuthCredentials) -> SMTPServerDecision {
        let authenticator = worker.daemon.smtpAuth
        let config = worker.policies.config
        let ip = peer.ip
        if authenticator.isLockedOut(ip: ip, now: worker.loop.now) {
            worker.authFailures += 1
            connection?.closeAfterNextReply()
            return .reply(Self.lockedOut)
        }
        // At most lockout-failures checks at once per address: any more could only be guesses.
        guard authenticator.beginAttempt(ip: ip, limit: config.auth.lockoutFailures) else {
            worker.authFailures += 1
            return .reply(Self.tooManyAttempts)
        }
        // Acting for another identity (RFC 4616 authzid) is not offered.
        let proxying = !credentials.authorizationIdentity.isEmpty && credentials.authorizationIdentity != credentials.username
        let user = proxying ? nil : config.auth.user(named: credentials.username)
        authenticator.verify(user: user, password: credentials.password, on: worker.loop) { [weak self] ok in
            authenticator.endAttempt(ip: ip)
            guard let self, let connection = self.connection, !connection.session.isClosed else { return }
            if ok, let user {
                self.loggedIn(as: user, session: connection.session)
                connection.decide(.accept)
            } else {
                self.loginFailed(ip: ip, user: credentials.username, policy: config.auth)
            }
        }
        return .pending
    }

    private func loggedIn(as user: SMTPUserSettings, session: SMTPServerSession) {
        // The address's failure count is not reset: one known login must not
        // let a client go on guessing other users' passwords.
        source = worker.policies.config.source(forUser: user, peer: peer)
        // The login's max-message-size applies from the next MAIL (SIZE= and the body).
        session.configuration.maxMessageSize = source.maxMessageSize > 0
            ? source.maxMessageSize : SMTPServerConfiguration().maxMessageSize
    }

    private func loginFailed(ip: String, user: String, policy: SMTPAuthSettings) {
        worker.authFailures += 1
        switch worker.daemon.smtpAuth.recordFailure(ip: ip, now: worker.loop.now, policy: policy) {
        case .lockedOut:
            worker.daemon.log("smtp-auth: \(ip) locked out for \(policy.lockoutTime) after \(policy.lockoutFailures) failed logins (last as '\(user)')")
            connection?.closeAfterNextReply()
            connection?.decide(.reply(Self.lockedOut))
        case .delay(let ns):
            if ns == 0 { connection?.decide(.reply(Self.credentialsInvalid)); return }
            _ = worker.loop.scheduleTimer(after: ns) { [weak self] in
                self?.connection?.decide(.reply(Self.credentialsInvalid))
            }
        }
    }

    /// The rights for a new transaction under the running config: the login's
    /// (re-read, so a reload that changes or removes the user applies), else
    /// the address's. A refusal when MAIL may not go on.
    func refreshSource(_ session: SMTPServerSession) -> SMTPReply? {
        let config = worker.policies.config
        if let name = session.authenticatedUser {
            guard let user = config.auth.user(named: name) else { return Self.loginRevoked }
            source = config.source(forUser: user, peer: peer)
            return nil
        }
        source = config.source(for: peer)
        // A reload may have turned require-auth on for a connection opened before.
        if source.requireAuth { return Self.authRequired }
        return nil
    }

    /// `max-msg-rate` of the source in force: per login, else per source block.
    func messageRateRefusal(_ session: SMTPServerSession) -> SMTPReply? {
        guard source.maxMsgRate != .unlimited else { return nil }
        let key = session.authenticatedUser.map { "user \($0)" }
            ?? source.name.map { "source {\($0)}" } ?? "source \(source.network.map { "\($0)" } ?? "default")"
        if worker.daemon.sourceRates.tryAcquire(key, rate: source.maxMsgRate, now: worker.loop.now) { return nil }
        return SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 7, 1),
                         "message rate limit exceeded (max-msg-rate \(source.maxMsgRate)), try again later")
    }
}
