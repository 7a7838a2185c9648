import PeregrineIO
/// AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN. The session parses the
/// exchange; the owner checks the credentials (`SMTPServerRequest.auth`) and
/// may answer later (`.pending`), e.g. after hashing off the loop or after a
/// brute-force delay. Nothing of the password is kept once the owner has it.
extension SMTPServerSession {
    /// True when EHLO advertises AUTH: enabled, and TLS is active or clear-text AUTH is allowed.
    public var isAuthOffered: Bool {
        configuration.authEnabled && (isTLSActive || configuration.allowUnencryptedAuth)
    }

    func handleAuth(mechanism: String, initialResponse initial: [UInt8]?) {
        guard configuration.authEnabled else { protocolError(Replies.authNotEnabled); return }
        guard helo != nil else { protocolError(Replies.needHelo); return }
        guard authenticatedUser == nil else { protocolError(Replies.alreadyAuthenticated); return }
        guard phase == .ready else { protocolError(Replies.authInTransaction); return }
        // Checked before the mechanism: a client must not be led to send a password in clear text.
        guard isTLSActive || configuration.allowUnencryptedAuth else { protocolError(Replies.encryptionRequired); return }
        switch mechanism {
        case "PLAIN":
            if let initial {
                authPlain(initial)
            } else {
                authState = .plainResponse
                write(SMTPReply(code: 334, lines: [""]))
            }
        case "LOGIN":
            authState = .loginUsername
            if let initial {
                // Not in the LOGIN draft, but common: the user name as an initial response.
                handleAuthResponse(UnsafeRawBufferPointer(start: nil, count: 0), initial: initial)
            } else {
                write(SMTPReply(code: 334, lines: ["VXNlcm5hbWU6"]))   // "Username:"
            }
        default:
            protocolError(Replies.authMechanism)
        }
    }

    /// A line sent in answer to a 334 (or an initial response).
    func handleAuthResponse(_ line: UnsafeRawBufferPointer, initial: [UInt8]? = nil) {
        let bytes = initial ?? Array(line)
        let state = authState
        authState = .none
        if bytes == [UInt8(ascii: "*")] { protocolError(Replies.authCancelled); return }
        switch state {
        case .none:
            return
        case .plainResponse:
            authPlain(bytes)
        case .loginUsername:
            guard let user = Base64.decode(bytes) else { protocolError(Replies.authBadBase64); return }
            authState = .loginPassword(String(decoding: user, as: UTF8.self))
            write(SMTPReply(code: 334, lines: ["UGFzc3dvcmQ6"]))   // "Password:"
        case .loginPassword(let user):
            guard let pass = Base64.decode(bytes) else { protocolError(Replies.authBadBase64); return }
            let c = SMTPAuthCredentials(mechanism: .login, username: user, password: String(decoding: pass, as: UTF8.self))
            requestDecision(.auth(c), .auth(c))
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`; `=` is the empty initial response.
    func authPlain(_ response: [UInt8]) {
        let decoded: [UInt8]?
        if response == [UInt8(ascii: "=")] { decoded = [] } else { decoded = Base64.decode(response) }
        guard let decoded else { protocolError(Replies.authBadBase64); return }
        let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3 else { protocolError(Replies.authBadPlain); return }
        let c = SMTPAuthCredentials(mechanism: .plain,
                                    authorizationIdentity: String(decoding: parts[0], as: UTF8.self),
                                    username: String(decoding: parts[1], as: UTF8.self),
                                    password: String(decoding: parts[2], as: UTF8.self))
        requestDecision(.auth(c), .auth(c))
    }
}
