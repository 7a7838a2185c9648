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
            handleAuth(mechanism: mechanism, initialResponse: initial)
        }
    }
}
