import PeregrineSMTP

extension HTTPInjectionRequest {
    /// The message for one recipient group before the Received header and
    /// DKIM: the raw content (substituted) or built MIME, with the job,
    /// campaign and tenant headers first. Pure, so the fuzz target runs the
    /// listener's exact path. `token` is called once, for structured content
    /// only (it names the Message-ID and the MIME boundaries).
    func message(for recipient: Recipient, perRecipient: Bool, hostName: String, date: @autoclosure () -> String,
                 token: () -> String) throws(APIError) -> [UInt8] {
        var extra: [(String, String)] = []
        if let j = jobID { extra.append(("X-Job", j)) }
        if let c = campaign { extra.append(("X-Campaign-ID", c)) }
        if let t = tenant { extra.append(("X-Tenant-ID", t)) }
        switch content {
        case .raw(let raw):
            var body = raw
            if !recipient.substitutions.isEmpty {
                body = try Self.rawMessage(recipient.substitute(String(decoding: raw, as: UTF8.self)))
            }
            var head: [UInt8] = []
            for (n, v) in extra { MIMEMessageBuilder.appendUnstructuredField(n, v, into: &head) }
            return head + body
        case .structured(var c):
            if perRecipient {
                if c.to.isEmpty { c.to = [MIMEMailbox(address: recipient.address)] }
                c.subject = recipient.substitute(c.subject)
                c.text = c.text.map(recipient.substitute)
                c.html = c.html.map(recipient.substitute)
                c.headers = c.headers.map { ($0.name, recipient.substitute($0.value)) }
            }
            c.headers = extra.map { (name: $0.0, value: $0.1) } + c.headers
            let unique = token()
            return MIMEMessageBuilder.build(c, messageID: "<\(unique)@\(hostName)>", date: date(), boundarySeed: unique)
        }
    }
}

/// The API body path for the fuzz target (Tests/Fuzz): parse, check and
/// build, with no key, spool or socket. Not API.
@_spi(Fuzzing)
public enum HTTPInjectionBodyPath {
    /// The status the body gets before a key's rights apply (200 when it
    /// parses), and the messages built for its first `buildLimit` recipients.
    /// `structured`: the content was built by Peregrine (its header section
    /// must then be ASCII).
    public static func run(body: [UInt8], maxRecipients: Int, buildLimit: Int)
        -> (status: Int, structured: Bool, messages: [[UInt8]]) {
        do {
            let request = try HTTPInjectionRequest.parse(body: body, maxRecipients: maxRecipients)
            var messages: [[UInt8]] = []
            var n = 0
            for recipient in request.recipients.prefix(buildLimit) {
                n += 1
                messages.append(try request.message(for: recipient, perRecipient: request.hasSubstitutions,
                                                    hostName: "fuzz.invalid", date: "Sat, 05 Dec 2026 18:00:00 +0000",
                                                    token: { "0123456789abcdef0123\(n)" }))
            }
            if case .structured = request.content { return (200, true, messages) }
            return (200, false, messages)
        } catch {
            return (error.status, false, [])
        }
    }
}
