import PeregrineIO
import Testing
import PeregrineSMTP

/// AUTH (RFC 4954) in the sans-I/O server session, byte string in, bytes out.
@Suite struct ServerSessionAuthTests {
    static let denied = SMTPReply(535, "5.7.8", "Authentication credentials invalid")

    /// A session with AUTH on, STARTTLS offered, credentials `user`/`secret` accepted.
    static func harness(plainTextAuth: Bool = false, implicitTLS: Bool = false, requireAuth: Bool = false,
                        decide: ((SMTPServerRequest) -> SMTPServerDecision)? = nil) -> ServerHarness {
        var c = SMTPServerConfiguration(hostname: "mx.test")
        c.authEnabled = true
        c.startTLSEnabled = !implicitTLS
        c.implicitTLS = implicitTLS
        c.allowUnencryptedAuth = plainTextAuth
        c.requireAuth = requireAuth
        return ServerHarness(c, decide: decide ?? { r in
            if case .auth(let cred) = r {
                return cred.username == "user" && cred.password == "secret" ? .accept : .reply(Self.denied)
            }
            return .accept
        })
    }

    static func plain(_ user: String, _ pass: String, authz: String = "") -> String {
        Base64.encode(bytes("\(authz)\u{0}\(user)\u{0}\(pass)"))
    }

    static func authRequests(_ h: ServerHarness) -> [SMTPAuthCredentials] {
        h.delegate.requests.compactMap { r -> SMTPAuthCredentials? in if case .auth(let c) = r { return c }; return nil }
    }

    /// Puts the harness's session through STARTTLS (the owner's handshake is not part of the session).
    static func startTLS(_ h: ServerHarness) {
        h.send("EHLO c\r\n")
        #expect(h.send("STARTTLS\r\n") == "220 2.0.0 Ready to start TLS\r\n")
    }

    @Test func notAdvertisedAndRefusedWith538BeforeTLS() {
        let h = Self.harness()
        let ehlo = h.send("EHLO c\r\n")
        #expect(!ehlo.contains("AUTH"), "\(ehlo)")
        #expect(ehlo.contains("STARTTLS"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n")
                == "538 5.7.11 Encryption required for requested authentication mechanism\r\n")
        #expect(h.send("AUTH LOGIN\r\n").hasPrefix("538 5.7.11"))
        // The password never reached the owner, and the session is not authenticated.
        #expect(Self.authRequests(h).isEmpty)
        #expect(h.session.authenticatedUser == nil)
        #expect(h.session.errorCount == 2)
    }

    @Test func advertisedAndAcceptedAfterSTARTTLS() {
        let h = Self.harness()
        Self.startTLS(h)
        let ehlo = h.send("EHLO c\r\n")
        #expect(ehlo.contains("250-AUTH PLAIN LOGIN\r\n") || ehlo.contains("250 AUTH PLAIN LOGIN\r\n"), "\(ehlo)")
        #expect(!ehlo.contains("STARTTLS"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n") == "235 2.7.0 Authentication successful\r\n")
        #expect(h.session.authenticatedUser == "user")
    }

    @Test func implicitTLSOffersAuthFromTheStart() {
        let h = Self.harness(implicitTLS: true)
        #expect(h.session.isTLSActive)
        #expect(h.send("EHLO c\r\n").contains("AUTH PLAIN LOGIN"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n").hasPrefix("235 2.7.0"))
    }

    @Test func allowUnencryptedAuthOffersItInClearText() {
        let h = Self.harness(plainTextAuth: true)
        #expect(h.send("EHLO c\r\n").contains("AUTH PLAIN LOGIN"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n").hasPrefix("235 2.7.0"))
    }

    @Test func plainWithInitialResponseAndWithContinuation() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "wrong"))\r\n") == "535 5.7.8 Authentication credentials invalid\r\n")
        #expect(h.session.authenticatedUser == nil)
        #expect(h.send("AUTH PLAIN\r\n") == "334 \r\n")
        #expect(h.send("\(Self.plain("user", "secret", authz: "admin"))\r\n") == "235 2.7.0 Authentication successful\r\n")
        let creds = Self.authRequests(h)
        #expect(creds == [SMTPAuthCredentials(mechanism: .plain, username: "user", password: "wrong"),
                          SMTPAuthCredentials(mechanism: .plain, authorizationIdentity: "admin", username: "user", password: "secret")])
    }

    @Test func loginWithPromptsAndWithInitialUserName() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n")
        #expect(h.send("\(Base64.encode(bytes("user")))\r\n") == "334 UGFzc3dvcmQ6\r\n")
        #expect(h.send("\(Base64.encode(bytes("nope")))\r\n").hasPrefix("535 5.7.8"))
        #expect(h.send("AUTH LOGIN \(Base64.encode(bytes("user")))\r\n") == "334 UGFzc3dvcmQ6\r\n")
        #expect(h.send("\(Base64.encode(bytes("secret")))\r\n").hasPrefix("235 2.7.0"))
        #expect(Self.authRequests(h).map(\.mechanism) == [.login, .login])
        #expect(h.session.authenticatedUser == "user")
    }

    @Test func starCancelsAtEveryPromptWith501() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH PLAIN\r\n") == "334 \r\n")
        #expect(h.send("*\r\n") == "501 5.0.0 Authentication cancelled\r\n")
        #expect(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n")
        #expect(h.send("*\r\n").hasPrefix("501 5.0.0"))
        h.send("AUTH LOGIN\r\n")
        #expect(h.send("\(Base64.encode(bytes("user")))\r\n") == "334 UGFzc3dvcmQ6\r\n")
        #expect(h.send("*\r\n").hasPrefix("501 5.0.0"))
        #expect(Self.authRequests(h).isEmpty)
        // After a cancel the session reads commands again.
        #expect(h.send("NOOP\r\n") == "250 2.0.0 Ok\r\n")
    }

    @Test func badBase64Is501AtEveryStage() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH PLAIN !!!!\r\n") == "501 5.5.2 Error: invalid base64 data\r\n")
        h.send("AUTH PLAIN\r\n")
        #expect(h.send("dXNlcg=\r\n").hasPrefix("501 5.5.2"))                // bad padding
        h.send("AUTH LOGIN\r\n")
        #expect(h.send("dXN@cg==\r\n").hasPrefix("501 5.5.2"))
        h.send("AUTH LOGIN\r\n")
        h.send("\(Base64.encode(bytes("user")))\r\n")
        #expect(h.send("c2Vj cmV0\r\n").hasPrefix("501 5.5.2"))
        // Valid base64 that is not authzid NUL authcid NUL passwd.
        #expect(h.send("AUTH PLAIN \(Base64.encode(bytes("user secret")))\r\n") == "501 5.5.2 Error: invalid AUTH PLAIN data\r\n")
        #expect(Self.authRequests(h).isEmpty)
    }

    @Test func sequenceErrorsAre503() {
        let h = Self.harness(plainTextAuth: true)
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n").hasPrefix("503 5.5.1"))   // before EHLO
        h.send("EHLO c\r\n")
        #expect(h.send("MAIL FROM:<a@b>\r\n").hasPrefix("250"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n") == "503 5.5.1 Error: MAIL transaction in progress\r\n")
        h.send("RSET\r\n")
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n").hasPrefix("235"))
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n") == "503 5.5.1 Error: already authenticated\r\n")
        #expect(h.send("AUTH CRAM-MD5\r\n").hasPrefix("503"))
        #expect(Self.authRequests(h).count == 1)
    }

    @Test func unknownMechanismIs504AndDisabledAuthIs502() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH CRAM-MD5\r\n").hasPrefix("504 5.5.4"))
        let off = ServerHarness()
        off.send("EHLO c\r\n")
        #expect(off.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n").hasPrefix("502 5.5.1"))
    }

    @Test func requireAuthRefusesMailWith530UntilLogin() {
        let h = Self.harness(requireAuth: true)
        Self.startTLS(h)
        h.send("EHLO c\r\n")
        #expect(h.send("MAIL FROM:<a@b>\r\n") == "530 5.7.0 Authentication required\r\n")
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "nope"))\r\n").hasPrefix("535"))
        #expect(h.send("MAIL FROM:<a@b>\r\n").hasPrefix("530 5.7.0"))
        h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n")
        #expect(h.send("MAIL FROM:<a@b>\r\n") == "250 2.1.0 Ok\r\n")
    }

    /// The owner may answer AUTH later (a brute-force delay, hashing off the
    /// loop): meanwhile pipelined input waits, then runs in order.
    @Test func pendingDecisionHoldsPipelinedInput() {
        let h = Self.harness(plainTextAuth: true, decide: { r in
            if case .auth = r { return .pending }
            return .accept
        })
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\nMAIL FROM:<a@b>\r\n") == "")
        #expect(h.session.isAwaitingDecision)
        h.session.decide(.reply(Self.denied))
        #expect(h.takeOutput() == "535 5.7.8 Authentication credentials invalid\r\n250 2.1.0 Ok\r\n")
        #expect(h.session.authenticatedUser == nil)
    }

    /// A 421 from the owner (locked out) closes the session, input or not.
    @Test func ownerLockoutReplyCloses() {
        let h = Self.harness(plainTextAuth: true, decide: { r in
            if case .auth = r { return .reply(SMTPReply(421, "4.7.0", "too many failed logins")) }
            return .accept
        })
        h.send("EHLO c\r\n")
        #expect(h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\nNOOP\r\n") == "421 4.7.0 too many failed logins\r\n")
        #expect(h.session.isClosed)
    }

    /// STARTTLS forgets a login made before it (RFC 3207 §4.2).
    @Test func startTLSForgetsAClearTextLogin() {
        let h = Self.harness(plainTextAuth: true)
        h.send("EHLO c\r\n")
        h.send("AUTH PLAIN \(Self.plain("user", "secret"))\r\n")
        #expect(h.session.authenticatedUser == "user")
        #expect(h.send("STARTTLS\r\n").hasPrefix("220"))
        #expect(h.session.authenticatedUser == nil)
    }
}
