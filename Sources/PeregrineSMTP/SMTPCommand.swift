/// A parsed SMTP command line (server side).
public enum SMTPCommand: Sendable, Hashable {
    case helo(SMTPHelo)
    case mail(SMTPMailFrom)
    case rcpt(SMTPRcptTo)
    case data
    case rset
    case noop
    case quit
    case vrfy
    case expn
    case help
    /// AUTH mechanism [initial-response]
    case auth(mechanism: String, initialResponse: [UInt8]?)
    case startTLS
    case bdat
    /// A verb we do not know.
    case unknown
}

/// Parses one command line (without its line end). Failures carry the reply to send.
public enum SMTPCommandParser {
    public static func parse(_ line: [UInt8]) -> Result<SMTPCommand, SMTPReply> {
        line.withUnsafeBytes { parse($0) }
    }

    public static func parse(_ line: UnsafeRawBufferPointer) -> Result<SMTPCommand, SMTPReply> {
        var verbEnd = 0
        while verbEnd < line.count, line[verbEnd] != 0x20 { verbEnd += 1 }
        let verb = UnsafeRawBufferPointer(rebasing: line[0..<verbEnd])
        let args = verbEnd < line.count ? UnsafeRawBufferPointer(rebasing: line[(verbEnd + 1)...]) : UnsafeRawBufferPointer(rebasing: line[line.count...])
        guard verb.count == 4 || verb.count == 8 else { return .success(.unknown) }
        func upper(_ b: UInt8) -> UInt8 { (b >= 0x61 && b <= 0x7a) ? b - 32 : b }
        var key: UInt32 = 0
        for k in 0..<4 { key = key << 8 | UInt32(upper(verb[k])) }
        if verb.count == 8 {
            let rest = (4..<8).map { upper(verb[$0]) }
            if key == fourCC("STAR"), rest == Array("TTLS".utf8) {
                return trimmed(args).isEmpty ? .success(.startTLS) : .failure(Replies.syntaxNoParameters)
            }
            return .success(.unknown)
        }
        switch key {
        case fourCC("EHLO"), fourCC("HELO"):
            let a = trimmed(args)
            var end = 0
            while end < a.count, a[end] != 0x20 { end += 1 }
            let name = UnsafeRawBufferPointer(rebasing: a[0..<end])
            // The argument ends up in the Received header: a bare CR or any
            // other control byte anywhere on the line could forge a header
            // line downstream (a bare CR becomes CRLF on the way out).
            guard end > 0, !a.contains(where: { $0 < 0x20 || $0 == 0x7f }), isHeloArgument(name) else {
                return .failure(SMTPReply(501, "5.5.4", key == fourCC("EHLO") ? "Syntax: EHLO domain or address-literal"
                                                                               : "Syntax: HELO domain or address-literal"))
            }
            let domain = String(decoding: name, as: UTF8.self)
            return .success(.helo(SMTPHelo(domain: domain, isExtended: key == fourCC("EHLO"))))
        case fourCC("MAIL"): return parseMail(args)
        case fourCC("RCPT"): return parseRcpt(args)
        case fourCC("DATA"): return trimmed(args).isEmpty ? .success(.data) : .failure(Replies.syntaxNoParameters)
        case fourCC("RSET"): return trimmed(args).isEmpty ? .success(.rset) : .failure(Replies.syntaxNoParameters)
        case fourCC("QUIT"): return trimmed(args).isEmpty ? .success(.quit) : .failure(Replies.syntaxNoParameters)
        case fourCC("NOOP"): return .success(.noop)
        case fourCC("HELP"): return .success(.help)
        case fourCC("VRFY"):
            return trimmed(args).isEmpty ? .failure(SMTPReply(501, "5.5.4", "Syntax: VRFY address")) : .success(.vrfy)
        case fourCC("EXPN"): return .success(.expn)
        case fourCC("BDAT"): return .success(.bdat)
        case fourCC("AUTH"):
            let a = trimmed(args)
            var end = 0
            while end < a.count, a[end] != 0x20 { end += 1 }
            guard end > 0 else { return .failure(SMTPReply(501, "5.5.4", "Syntax: AUTH mechanism")) }
            let mech = String(decoding: UnsafeRawBufferPointer(rebasing: a[0..<end]).map(upper), as: UTF8.self)
            let rest = trimmed(UnsafeRawBufferPointer(rebasing: a[end...]))
            return .success(.auth(mechanism: mech, initialResponse: rest.isEmpty ? nil : Array(rest)))
        default:
            return .success(.unknown)
        }
    }

    /// RFC 5321 §4.1.2 `Domain / address-literal`, at most 255 bytes:
    /// dot-separated labels of letters, digits and inner hyphens (and `_`,
    /// which Windows host names carry and every MTA tolerates; a trailing dot
    /// is allowed), or `[` dcontent `]` (IPv4, `IPv6:…` or a tagged literal).
    /// Nothing else: no controls, no spaces, no bytes above 0x7E (SMTPUTF8 is
    /// not offered).
    static func isHeloArgument(_ p: UnsafeRawBufferPointer) -> Bool {
        guard !p.isEmpty, p.count <= 255 else { return false }
        if p[0] == UInt8(ascii: "[") {
            guard p.count >= 3, p[p.count - 1] == UInt8(ascii: "]") else { return false }
            // dcontent: %d33-90 / %d94-126 (printable, not "[", "\\", "]").
            for b in p[1..<(p.count - 1)] where b < 33 || b > 126 || (b >= 91 && b <= 93) { return false }
            return true
        }
        var labelLength = 0
        var previous: UInt8 = UInt8(ascii: ".")
        for b in p {
            switch b {
            case UInt8(ascii: "."):
                guard labelLength > 0, previous != UInt8(ascii: "-") else { return false }
                labelLength = 0
            case UInt8(ascii: "-"):
                guard labelLength > 0 else { return false }
                labelLength += 1
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
                labelLength += 1
            default:
                return false
            }
            guard labelLength <= 63 else { return false }
            previous = b
        }
        return previous != UInt8(ascii: "-")
    }

    static func fourCC(_ s: StaticString) -> UInt32 {
        var k: UInt32 = 0
        s.withUTF8Buffer { for b in $0 { k = k << 8 | UInt32(b) } }
        return k
    }

    static func trimmed(_ p: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var s = 0, e = p.count
        while s < e, p[s] == 0x20 || p[s] == 0x09 { s += 1 }
        while e > s, p[e - 1] == 0x20 || p[e - 1] == 0x09 { e -= 1 }
        return UnsafeRawBufferPointer(rebasing: p[s..<e])
    }

    /// Matches a case-insensitive ASCII prefix ("FROM:").
    static func hasPrefix(_ p: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        prefix.withUTF8Buffer { pre in
            guard p.count >= pre.count else { return false }
            for k in 0..<pre.count {
                var b = p[k]
                if b >= 0x61 && b <= 0x7a { b -= 32 }
                if b != pre[k] { return false }
            }
            return true
        }
    }

    /// Splits "<path> params" into the path (without brackets and source route)
    /// and the parameter text after it; both point into `p` (nothing is copied).
    static func parsePath(_ p: UnsafeRawBufferPointer) -> (path: UnsafeRawBufferPointer, params: UnsafeRawBufferPointer)? {
        let a = trimmed(p)
        guard !a.isEmpty else { return nil }
        var pathBytes: UnsafeRawBufferPointer
        var restStart: Int
        if a[0] == UInt8(ascii: "<") {
            guard let close = a.firstIndex(of: UInt8(ascii: ">")) else { return nil }
            pathBytes = UnsafeRawBufferPointer(rebasing: a[1..<close])
            restStart = close + 1
            if restStart < a.count && a[restStart] != 0x20 { return nil }
        } else {
            var end = 0
            while end < a.count, a[end] != 0x20 { end += 1 }
            pathBytes = UnsafeRawBufferPointer(rebasing: a[0..<end])
            restStart = end
        }
        // Drop an RFC 5321 source route "@a,@b:".
        if pathBytes.first == UInt8(ascii: "@"), let colon = pathBytes.firstIndex(of: UInt8(ascii: ":")) {
            pathBytes = UnsafeRawBufferPointer(rebasing: pathBytes[(colon + 1)...])
        }
        guard pathBytes.count <= 256 else { return nil }
        for b in pathBytes where b <= 0x20 || b == 0x7f || b == UInt8(ascii: "<") || b == UInt8(ascii: ">") {
            return nil
        }
        return (pathBytes, UnsafeRawBufferPointer(rebasing: a[restStart...]))
    }

    /// Calls `body` with each space-separated `KEY[=value]` token of `params`,
    /// split at the first "=" (value nil without one); stops at the first
    /// failure `body` returns.
    static func forEachParam(_ params: UnsafeRawBufferPointer,
                             _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer?) -> SMTPReply?) -> SMTPReply? {
        var i = 0
        while i < params.count {
            while i < params.count, params[i] == 0x20 { i += 1 }
            let s = i
            while i < params.count, params[i] != 0x20 { i += 1 }
            guard i > s else { continue }
            let t = UnsafeRawBufferPointer(rebasing: params[s..<i])
            let failure: SMTPReply?
            if let eq = t.firstIndex(of: UInt8(ascii: "=")) {
                failure = body(UnsafeRawBufferPointer(rebasing: t[..<eq]), UnsafeRawBufferPointer(rebasing: t[(eq + 1)...]))
            } else {
                failure = body(t, nil)
            }
            if let failure { return failure }
        }
        return nil
    }

    /// Whether `bytes` uppercased equal `upper` (an uppercase ASCII keyword).
    /// ASCII bytes are compared directly; text with other bytes goes through
    /// `String.uppercased()` as it always did (Unicode case mapping makes,
    /// for instance, "ſize" equal "SIZE").
    static func uppercased(_ bytes: UnsafeRawBufferPointer, equals upper: StaticString) -> Bool {
        for b in bytes where b >= 0x80 {
            return String(decoding: bytes, as: UTF8.self).uppercased() == upper.description
        }
        return upper.withUTF8Buffer { u in
            guard u.count == bytes.count else { return false }
            for k in 0..<u.count {
                var b = bytes[k]
                if b >= 0x61 && b <= 0x7a { b -= 32 }
                if b != u[k] { return false }
            }
            return true
        }
    }

    static func parseMail(_ args: UnsafeRawBufferPointer) -> Result<SMTPCommand, SMTPReply> {
        let a = trimmed(args)
        guard hasPrefix(a, "FROM:") else { return .failure(SMTPReply(501, "5.5.4", "Syntax: MAIL FROM:<address>")) }
        guard let (path, params) = parsePath(UnsafeRawBufferPointer(rebasing: a[5...])) else {
            return .failure(SMTPReply(501, "5.1.7", "Bad sender address syntax"))
        }
        var mail = SMTPMailFrom(reversePath: String(decoding: path, as: UTF8.self))
        let failure = forEachParam(params) { key, value in
            if uppercased(key, equals: "SIZE") {
                guard let v = value, !v.isEmpty, v.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    return Replies.badParameterValue
                }
                // A well-formed size too big for Int is still just a size over the limit
                // (RFC 1870: 552), not a syntax error.
                mail.size = v.count <= 18 ? v.reduce(0) { $0 * 10 + Int($1 - 0x30) } : Int.max
            } else if uppercased(key, equals: "BODY") {
                guard let v = value else { return Replies.badParameterValue }
                if uppercased(v, equals: "7BIT") { mail.body = .sevenBit }
                else if uppercased(v, equals: "8BITMIME") { mail.body = .eightBitMIME }
                else { return Replies.badParameterValue }
            } else if uppercased(key, equals: "ENVID") {
                guard let v = value, !v.isEmpty, v.count <= 100, let d = XText.decode(v) else { return Replies.badParameterValue }
                mail.envelopeID = String(decoding: d, as: UTF8.self)
            } else if uppercased(key, equals: "RET") {
                guard let v = value else { return Replies.badParameterValue }
                if uppercased(v, equals: "FULL") { mail.ret = .full }
                else if uppercased(v, equals: "HDRS") { mail.ret = .headers }
                else { return Replies.badParameterValue }
            } else if uppercased(key, equals: "AUTH") {
                guard let v = value else { return Replies.badParameterValue }
                mail.auth = String(decoding: v, as: UTF8.self)
            } else if uppercased(key, equals: "XVERP") {
                // Bare XVERP, or XVERP=+= (Postfix's default delimiters, the
                // only ones Peregrine writes: the bounce processor decodes them).
                if let v = value, !(v.count == 2 && v[0] == UInt8(ascii: "+") && v[1] == UInt8(ascii: "=")) {
                    return Replies.badParameterValue
                }
                mail.xverp = true
            } else {
                return Replies.unsupportedParameter
            }
            return nil
        }
        if let failure { return .failure(failure) }
        return .success(.mail(mail))
    }

    static func parseRcpt(_ args: UnsafeRawBufferPointer) -> Result<SMTPCommand, SMTPReply> {
        let a = trimmed(args)
        guard hasPrefix(a, "TO:") else { return .failure(SMTPReply(501, "5.5.4", "Syntax: RCPT TO:<address>")) }
        guard let (path, params) = parsePath(UnsafeRawBufferPointer(rebasing: a[3...])), !path.isEmpty else {
            return .failure(SMTPReply(501, "5.1.3", "Bad recipient address syntax"))
        }
        var rcpt = SMTPRcptTo(forwardPath: String(decoding: path, as: UTF8.self))
        let failure = forEachParam(params) { key, value in
            if uppercased(key, equals: "NOTIFY") {
                guard let v = value, !v.isEmpty else { return Replies.badParameterValue }
                var n: SMTPDSNNotify = []
                var s = 0
                while s <= v.count {
                    var e = s
                    while e < v.count, v[e] != UInt8(ascii: ",") { e += 1 }
                    let item = UnsafeRawBufferPointer(rebasing: v[s..<e])
                    if uppercased(item, equals: "NEVER") { n.insert(.never) }
                    else if uppercased(item, equals: "SUCCESS") { n.insert(.success) }
                    else if uppercased(item, equals: "FAILURE") { n.insert(.failure) }
                    else if uppercased(item, equals: "DELAY") { n.insert(.delay) }
                    else { return Replies.badParameterValue }
                    s = e + 1
                }
                if n.contains(.never) && n != .never { return Replies.badParameterValue }
                rcpt.notify = n
            } else if uppercased(key, equals: "ORCPT") {
                guard let v = value, let semi = v.firstIndex(of: UInt8(ascii: ";")), semi > 0,
                      let d = XText.decode(v[(semi + 1)...]), !d.isEmpty else { return Replies.badParameterValue }
                rcpt.originalRecipient = .init(addressType: String(decoding: v[..<semi], as: UTF8.self),
                                               address: String(decoding: d, as: UTF8.self))
            } else {
                return Replies.unsupportedParameter
            }
            return nil
        }
        if let failure { return .failure(failure) }
        return .success(.rcpt(rcpt))
    }
}
