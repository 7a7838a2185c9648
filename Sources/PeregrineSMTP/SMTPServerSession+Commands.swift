extension SMTPServerSession {
    func handle(_ command: SMTPCommand) {
        if phase == .rejected {
            if case .quit = command { write(Replies.bye); connectionClosed() } else { protocolError(Replies.rejectedGreetingSequence) }
            return
        }
        switch command {
        case .quit:
            write(Replies.bye)
            connectionClosed()
        case .noop:
            write(Replies.ok)
        case .rset:
            abortTransaction()
            write(Replies.ok)
        case .help:
            write(Replies.help)
        case .vrfy:
            write(Replies.vrfy)
        case .expn:
            protocolError(Replies.expn)
        case .bdat:
            protocolError(Replies.bdat)
        case .unknown:
            protocolError(Replies.unknownCommand)
        case .helo(let h):
            requestDecision(.helo(h), .helo(h))
        case .mail(let m):
            guard helo != nil else { protocolError(Replies.needHelo); return }
            guard phase == .ready else { protocolError(Replies.nestedMail); return }
            if configuration.requireAuth && authenticatedUser == nil { write(Replies.authRequired); return }
            if let size = m.size, size > configuration.maxMessageSize { write(Replies.messageTooBig); return }
            requestDecision(.mail(m), .mailFrom(m))
        case .rcpt(let r):
            guard phase == .mail || phase == .rcpt else { protocolError(Replies.needMail); return }
            rcptAttempted = true
            if transaction.recipients.count >= configuration.maxRecipients { write(Replies.tooManyRecipients); return }
            requestDecision(.rcpt(r), .rcptTo(r))
        case .data:
            switch phase {
            case .rcpt:
                write(Replies.startData)
                phase = .data
                unstuffer.reset()
                bodySize = 0
                bodyOverflow = false
            case .mail:
                protocolError(rcptAttempted ? Replies.noValidRecipients : Replies.needRcpt)
            default:
                protocolError(helo == nil ? Replies.needHelo : Replies.needMail)
            }
        case .startTLS:
            guard configuration.startTLSEnabled else { protocolError(Replies.startTLSNotAvailable); return }
            guard !isTLSActive else { protocolError(Replies.tlsAlreadyActive); return }
            guard phase == .connected || phase == .ready else { protocolError(Replies.badSequence); return }
            requestDecision(.startTLS, .startTLS)
        case .auth(let mechanism, let initial):
            guard configuration.authEnabled else { protocolError(Replies.authNotEnabled); return }
            guard helo != nil else { protocolError(Replies.needHelo); return }
            guard authenticatedUser == nil else { protocolError(Replies.alreadyAuthenticated); return }
            guard phase == .ready else { protocolError(Replies.authInTransaction); return }
            switch mechanism {
            case "PLAIN":
                if let initial { authPlain(initial) } else {
                    authState = .plainResponse
                    write(SMTPReply(code: 334, lines: [""]))
                }
            case "LOGIN":
                if let initial {
                    authState = .loginUsername
                    handleAuthResponse(UnsafeRawBufferPointer(start: nil, count: 0), initial: initial)
                } else {
                    authState = .loginUsername
                    write(SMTPReply(code: 334, lines: ["VXNlcm5hbWU6"]))
                }
            default:
                protocolError(Replies.authMechanism)
            }
        }
    }

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
            write(SMTPReply(code: 334, lines: ["UGFzc3dvcmQ6"]))
        case .loginPassword(let user):
            guard let pass = Base64.decode(bytes) else { protocolError(Replies.authBadBase64); return }
            let c = SMTPAuthCredentials(mechanism: .login, username: user, password: String(decoding: pass, as: UTF8.self))
            requestDecision(.auth(c), .auth(c))
        }
    }

    func authPlain(_ response: [UInt8]) {
        let decoded: [UInt8]?
        if response == [UInt8(ascii: "=")] { decoded = [] } else { decoded = Base64.decode(response) }
        guard let decoded else { protocolError(Replies.authBadBase64); return }
        let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3 else { protocolError(SMTPReply(501, "5.5.2", "Error: invalid AUTH PLAIN data")); return }
        let c = SMTPAuthCredentials(mechanism: .plain,
                                    authorizationIdentity: String(decoding: parts[0], as: UTF8.self),
                                    username: String(decoding: parts[1], as: UTF8.self),
                                    password: String(decoding: parts[2], as: UTF8.self))
        requestDecision(.auth(c), .auth(c))
    }
}
