#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP
import PeregrineTransport
import PeregrineSpool
import PeregrineEngine
import PeregrineAccounting

/// The policy side of one injection connection: relay control by `<source>`,
/// the body collected into an owned buffer, header processing
/// (X-Virtual-MTA, X-Job, Received) and the durable hand-off to the spool at
/// end of DATA. The `250` is sent only after the spool's fsync covering the
/// message completed (principle 5).
final class InjectionHandler<Loop: EventLoop>: SMTPServerSessionDelegate, SMTPServerConnectionHandler {
    unowned let worker: LoopWorker<Loop>
    let peer: SocketAddress
    /// The client's `<source>` rights: looked up at connect, then again at
    /// every MAIL against the running config, so that a reload revoking
    /// relaying applies to connections already open. A transaction keeps the
    /// rights it started with.
    var source: SourceSettings
    var connection: SMTPServerConnection<Loop>?
    /// Set when the connection is over a `max-smtp-in` limit: the greeting
    /// is this 421 and the connection closes.
    var refusal: SMTPReply?
    private let body = OwnedBuffer(capacity: 8192)
    private let assembled = OwnedBuffer(capacity: 8192)
    /// The message before signing (used only when DKIM is configured).
    private lazy var unsigned = OwnedBuffer(capacity: 8192)
    private var sawMessageTooBig = false

    init(worker: LoopWorker<Loop>, peer: SocketAddress, source: SourceSettings) {
        self.worker = worker
        self.peer = peer
        self.source = source
    }

    func smtpSession(_ session: SMTPServerSession, decide request: SMTPServerRequest) -> SMTPServerDecision {
        let decision = decidePolicy(session, request)
        logDecision(request, decision)  // log-commands (InjectionHandler+Logging.swift)
        return decision
    }

    private func decidePolicy(_ session: SMTPServerSession, _ request: SMTPServerRequest) -> SMTPServerDecision {
        switch request {
        case .connection:
            if let refusal {
                connection?.closeAfterNextReply()
                return .reply(refusal)
            }
            if !source.smtpService {
                return .reply(SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 7, 1),
                                        "no SMTP service for \(peer.ip)"))
            }
            return .accept
        case .rcptTo(let rcpt):
            guard let at = rcpt.forwardPath.lastIndex(of: "@"), rcpt.forwardPath.index(after: at) < rcpt.forwardPath.endIndex else {
                return .reply(SMTPReply(code: 501, enhancedCode: EnhancedStatusCode(5, 1, 3),
                                        "recipient address must have a domain"))
            }
            // A login's rights are in `source` (see InjectionHandler+Auth); relay-domain is open to every client.
            // Judged on the address the mail will go to: after the source's rcpt-to rewriting.
            if !source.alwaysAllowRelaying, let refusal = relayRefusal(rcpt.forwardPath) { return .reply(refusal) }
            if let refusal = suppressionRefusal(session, rcpt.forwardPath) { return .reply(refusal) }
            return .accept
        case .endOfData(let info):
            return finishMessage(session, bodyIsWireForm: info.isWireForm)
        case .auth(let credentials):
            return authenticate(session, credentials)
        case .startTLS:
            // Advertised only when smtp-server-tls-certificate/-key are configured.
            guard connection?.tlsContext != nil else {
                return .reply(SMTPReply(code: 454, enhancedCode: EnhancedStatusCode(4, 7, 0), "TLS not available"))
            }
            return .accept
        case .mailFrom:
            if worker.isShuttingDown { return .reply(Self.shuttingDown) }
            if let refusal = refreshSource(session) ?? messageRateRefusal(session) { return .reply(refusal) }
            if !source.smtpService {
                return .reply(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1),
                                        "no SMTP service for \(peer.ip)"))
            }
            return .accept
        case .helo:
            return .accept
        }
    }

    func smtpSession(_ session: SMTPServerSession, didReceiveBodyChunk chunk: UnsafeRawBufferPointer) {
        body.append(chunk)
    }

    func smtpSessionDidAbortTransaction(_ session: SMTPServerSession) {
        body.clear()
    }

    /// After shutdown began nothing new is committed: a message completed
    /// now gets this (and the connection closes), never a 250 that a closing
    /// connection might not deliver.
    static var shuttingDown: SMTPReply { SMTPReply(code: 421, enhancedCode: EnhancedStatusCode(4, 3, 2),
                                        "service shutting down, message not accepted; try again later") }

    private func finishMessage(_ session: SMTPServerSession, bodyIsWireForm: Bool) -> SMTPServerDecision {
        if worker.isShuttingDown {
            body.clear()
            return .reply(Self.shuttingDown)
        }
        let transaction = session.transaction
        guard let mail = transaction.mailFrom, !transaction.recipients.isEmpty else {
            body.clear()
            return .reply(SMTPReply(code: 503, enhancedCode: EnhancedStatusCode(5, 5, 1), "no valid recipients"))
        }
        let bytes = body.bytes
        logData(bytes)  // log-data (InjectionHandler+Logging.swift)
        // <bounce-processor>/<feedback-loop-processor>: their recipients' mail is read, not relayed.
        var relayed = Array(transaction.recipients.indices)
        var reportTypes: [AccountingRecordType] = []  // rb/f records the 250 waits for (durable first)
        if let inbound = worker.inboundReports(for: bytes, recipients: transaction.recipients.map(\.forwardPath),
                                               peer: peer, helo: session.helo?.domain) {
            relayed = inbound.relay
            reportTypes = inbound.loggedTypes
            if relayed.isEmpty {
                body.clear()
                // The report exists nowhere but in its records: 250 once they are on disk, else
                // 451 so the reporter retries (a duplicate record at worst, never a lost one).
                worker.syncAccounting(reportTypes) { [weak self] durable in
                    guard let self, let connection = self.connection else { return }
                    connection.completeMessage(self.loggedResult(durable
                        ? SMTPReply(code: 250, enhancedCode: EnhancedStatusCode(2, 0, 0), "OK report processed")
                        : SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 3, 0),
                                    "local error in processing: accounting file not written")))
                }
                return .pending
            }
        }
        let headers = HeaderSection(bytes)
        var jobID = ""
        var vmtaName = source.defaultVirtualMTA ?? worker.defaultVMTA
        var drop: [Range<Int>] = []
        if let listName = source.patternList, let list = worker.policies.config.vmtaPatternLists[listName],
           let picked = list.virtualMTA(mailFrom: mail.reversePath, header: { name in
               headers.first(named: name, in: bytes).map { HeaderSection.string($0.value, in: bytes) }
           }) {
            vmtaName = picked // an X-Virtual-MTA header below still wins
        }
        if source.processXVirtualMTA, let f = headers.first(named: "X-Virtual-MTA", in: bytes) {
            vmtaName = HeaderSection.string(f.value, in: bytes)
            if !source.retainXVirtualMTA {
                for field in headers.all(named: "X-Virtual-MTA", in: bytes) { drop.append(field.range) }
            }
        }
        if let name = source.jobHeaderName, let f = headers.first(named: name, in: bytes) {
            jobID = HeaderSection.string(f.value, in: bytes)
            if !source.retainXJob { for field in headers.all(named: name, in: bytes) { drop.append(field.range) } }
        }
        var envID = mail.envelopeID ?? ""
        if source.processXEnvID, let f = headers.first(named: "X-Envid", in: bytes) {
            // RFC 3461 caps ENVID at 100 characters.
            if envID.isEmpty { envID = String(HeaderSection.string(f.value, in: bytes).prefix(100)) }
            for field in headers.all(named: "X-Envid", in: bytes) { drop.append(field.range) }
        }
        for name in source.removeHeaders {
            for field in headers.all(named: name, in: bytes) { drop.append(field.range) }
        }
        if source.removeReceivedHeaders {
            for field in headers.all(named: "Received", in: bytes) { drop.append(field.range) }
        }
        // add-message-id-header, add-date-header: above the message's own
        // fields, inside what DKIM signs.
        var added: [UInt8] = []
        if source.addMessageIDHeader && headers.first(named: "Message-ID", in: bytes) == nil {
            added += Array("Message-ID: <\(worker.newMessageIDLocalPart())@\(worker.daemon.hostName)>\r\n".utf8)
        }
        if source.addDateHeader && headers.first(named: "Date", in: bytes) == nil {
            added += Array("Date: \(RFC5322DateTime.format(wallClockSeconds()))\r\n".utf8)
        }
        // rewrite-list (InjectionHandler+Rewrite.swift): From: is replaced inside what DKIM signs.
        let rewrite = InjectionRewrite(list: source.rewriteList.flatMap { worker.policies.config.rewriteLists[$0] })
        if let from = rewrite.fromHeader(headers, in: bytes) {
            drop.append(from.drop)
            added += from.line
        }
        guard let vmta = worker.pickVMTA(vmtaName) else {
            body.clear()
            return .reply(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1),
                                    "unknown virtual-mta or pool '\(vmtaName)'"))
        }
        // With DKIM configured, the message without the dropped fields is built
        // first and signed; the Received header (not signed) goes above the signatures.
        // Where the lines this MTA adds (Received, DKIM-Signature, added fields) end in `assembled`.
        var addedEnd = 0
        if worker.policies.config.dkimConfigured {
            let config = worker.policies.config
            unsigned.clear()
            if !added.isEmpty { added.withUnsafeBytes { unsigned.append($0) } }
            Self.append(bytes, without: drop, to: unsigned)
            body.clear()
            let rcpt = transaction.recipients[0].forwardPath
            let domain = rcpt.lastIndex(of: "@").map { rcpt[rcpt.index(after: $0)...].lowercased() } ?? ""
            // The signer reuses `headers` (this scan of the received message): one header parse per message.
            let outcome = worker.dkim.sign(unsigned.bytes, prefixLength: added.count, original: headers, dropped: drop,
                                           config: config, source: source, vmta: vmta,
                                           recipientDomain: domain, now: wallClockSeconds())
            if case .refused(let reply) = outcome {
                unsigned.clear()
                return .reply(reply)
            }
            assembled.clear()
            if source.addReceivedHeader { appendReceived(session, transaction) }
            if case .signed = outcome { worker.dkim.header.withUnsafeBytes { assembled.append($0) } }
            addedEnd = assembled.count + added.count
            assembled.append(unsigned.bytes)
            unsigned.clear()
        } else {
            // Final body: Received header, then the message without the dropped fields.
            assembled.clear()
            if source.addReceivedHeader { appendReceived(session, transaction) }
            if !added.isEmpty { added.withUnsafeBytes { assembled.append($0) } }
            addedEnd = assembled.count
            Self.append(bytes, without: drop, to: assembled)
            body.clear()
        }

        let envelope = SpoolEnvelope(
            sender: Array(rewrite.sender(mail.reversePath).utf8),
            recipients: relayed.map { transaction.recipients[$0] }.map {
                SpoolRecipient(address: Array(rewrite.recipient($0.forwardPath).utf8),
                               orcpt: Array(($0.originalRecipient.map { "\($0.addressType);\($0.address)" } ?? "").utf8),
                               notify: NotifyFlags(rawValue: $0.notify?.rawValue ?? 0))
            },
            vmta: Array(vmta.utf8), jobID: Array(jobID.utf8), envID: Array(envID.utf8),
            ret: mail.ret.map { $0 == .full ? DSNReturn.full : .headers } ?? .unspecified,
            receivedAt: wallClockMilliseconds(), verp: mail.xverp || source.verpDefault,
            // The received part was its own wire form and whole fields only were dropped from it;
            // the lines added above it are checked here (a few hundred bytes).
            wireForm: bodyIsWireForm
                && DotStuffer.isOwnWireForm(UnsafeRawBufferPointer(rebasing: assembled.bytes[0 ..< addedEnd])))
        let size = assembled.count
        let pool = worker.policies.injectionTarget(named: vmtaName).poolName
        worker.accept(envelope: envelope, body: assembled.bytes, peer: peer, pool: pool, smtpUser: session.authenticatedUser) { [weak self] result in
            guard let self, let connection = self.connection else { return }
            switch result {
            case .success(let id):
                let ok = SMTPReply(code: 250, enhancedCode: EnhancedStatusCode(2, 0, 0), "OK id=\(id) size=\(size)")
                if reportTypes.isEmpty {
                    connection.completeMessage(self.loggedResult(ok))
                } else {
                    // A report also relayed (deliver-matched-email): its records durable too before the 250. The
                    // message is spooled by now, so a failed sync (logged by the writer) still gets 250: a 451
                    // would have the peer send the relayed message twice.
                    self.worker.syncAccounting(reportTypes) { [weak self] _ in
                        guard let self, let connection = self.connection else { return }
                        connection.completeMessage(self.loggedResult(ok))
                    }
                }
            case .failure(let error):
                // The peer learns what failed, not the spool's paths (the log and /status have those).
                let why: String
                switch error {
                case .invalidMessage(let w): why = w
                case .loop(_, let e): why = "spool: \(e)"
                default: why = "spool unavailable"
                }
                connection.completeMessage(self.loggedResult(SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 3, 0),
                                                     "local error in processing: \(why)")))
            }
        }
        return .pending
    }
}

extension InjectionHandler {
    /// The 550 for a recipient on the suppression list (its `s` record logged), or nil.
    fileprivate func suppressionRefusal(_ session: SMTPServerSession, _ recipient: String) -> SMTPReply? {
        let daemon = worker.daemon
        guard let reason = daemon.suppression?.reason(forRecipient: recipient) else { return nil }
        let reply = Daemon<Loop>.suppressedReply(recipient, reason)
        daemon.logSuppressed(sender: session.transaction.mailFrom?.reversePath ?? "", recipient: recipient, reason: reason,
                             reply: reply, peer: "\(session.helo?.domain ?? peer.ip) (\(peer.ip))")
        return reply
    }

    /// `bytes` without the `drop` ranges (whole header fields; they may overlap), onto `out`.
    fileprivate static func append(_ bytes: UnsafeRawBufferPointer, without drop: [Range<Int>], to out: OwnedBuffer) {
        var cursor = 0
        for r in drop.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if r.lowerBound > cursor { out.append(UnsafeRawBufferPointer(rebasing: bytes[cursor..<r.lowerBound])) }
            cursor = max(cursor, r.upperBound)
        }
        if cursor < bytes.count { out.append(UnsafeRawBufferPointer(rebasing: bytes[cursor..<bytes.count])) }
    }

    /// The Received header this MTA adds, into `assembled`.
    fileprivate func appendReceived(_ session: SMTPServerSession, _ transaction: SMTPTransaction) {
        let received = worker.receivedHeader(peer: peer, helo: session.helo?.domain ?? peer.ip, recipient:
            transaction.recipients.count == 1 ? transaction.recipients[0].forwardPath : nil,
            tls: connection?.tls?.isHandshakeComplete ?? false, authenticated: session.authenticatedUser != nil)
        received.withUnsafeBytes { assembled.append($0) }
    }
}

/// `text` with every control byte, space, `(`, `)`, `<`, `>`, backslash and
/// non-ASCII byte written as `\xHH`: what a peer sent can sit in a
/// header field but never end it or open a comment.
func receivedHeaderText(_ text: String) -> String {
    var out: [UInt8] = []
    appendReceivedHeaderText(text, to: &out)
    return String(decoding: out, as: UTF8.self)
}

/// `receivedHeaderText`, appended as bytes (the injection path builds its Received header per message).
func appendReceivedHeaderText(_ text: String, to out: inout [UInt8]) {
    out.reserveCapacity(out.count + text.utf8.count)
    for b in text.utf8 {
        switch b {
        case 0...0x20, 0x7f...0xff, UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "<"), UInt8(ascii: ">"),
             UInt8(ascii: "\\"):
            let hex: StaticString = "0123456789ABCDEF"
            out.append(UInt8(ascii: "\\"))
            out.append(UInt8(ascii: "x"))
            out.append(hex.utf8Start[Int(b >> 4)])
            out.append(hex.utf8Start[Int(b & 15)])
        default:
            out.append(b)
        }
    }
}
