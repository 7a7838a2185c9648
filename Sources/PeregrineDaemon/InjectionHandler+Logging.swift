import PeregrineIO
import PeregrineSMTP
import PeregrineEngine

/// `log-commands` and `log-data` of a `<source>`: the injection session's
/// commands and the answers they got, written to the log file (never stderr).
/// AUTH is logged by mechanism and user name only: its password or response never.
extension InjectionHandler {
    func logDecision(_ request: SMTPServerRequest, _ decision: SMTPServerDecision) {
        guard source.logCommands else { return }
        let command: String
        switch request {
        case .connection: return  // log-connections says it
        case .helo(let h): command = "\(h.isExtended ? "EHLO" : "HELO") \(h.domain)"
        case .mailFrom(let m): command = "MAIL FROM:<\(m.reversePath)>"
        case .rcptTo(let r): command = "RCPT TO:<\(r.forwardPath)>"
        case .endOfData(let info): command = "DATA (\(info.size) bytes)"
        case .auth(let c): command = "AUTH \(c.mechanism) user '\(c.username)' (credentials not logged)"
        case .startTLS: command = "STARTTLS"
        }
        let answer: String
        switch decision {
        case .accept: answer = "accepted"
        case .reply(let r): answer = r.description
        case .pending: answer = "pending (committing to the spool)"
        }
        worker.daemon.logDetail("smtp \(peer): \(command) -> \(answer)")
    }

    /// The answer to a message once the spool has decided (log-commands); returns `reply`.
    func loggedResult(_ reply: SMTPReply) -> SMTPReply {
        if source.logCommands { worker.daemon.logDetail("smtp \(peer): end of DATA -> \(reply)") }
        return reply
    }

    /// `log-data yes`: the message as received, one log line per message line,
    /// at most `logDataLimit` bytes of it. For debugging a single client: it
    /// puts message contents in the log, so it is off by default.
    func logData(_ bytes: UnsafeRawBufferPointer) {
        guard source.logData else { return }
        let shown = min(bytes.count, Self.logDataLimit)
        var start = 0
        var lineNumber = 0
        while start < shown {
            var end = start
            while end < shown && bytes[end] != 0x0A { end += 1 }
            var stop = end
            if stop > start && bytes[stop - 1] == 0x0D { stop -= 1 }
            lineNumber += 1
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<stop]), as: UTF8.self)
            worker.daemon.logDetail("smtp \(peer): data \(lineNumber): \(text)")
            start = end + 1
        }
        if bytes.count > shown {
            worker.daemon.logDetail("smtp \(peer): data: \(bytes.count - shown) more byte(s) not logged (log-data shows the first \(Self.logDataLimit))")
        }
    }

    static var logDataLimit: Int { 64 * 1024 }
}
