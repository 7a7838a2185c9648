import PeregrineIO
import PeregrineHTTP
import PeregrineSMTP

/// An API error: the HTTP status, a stable machine-readable code, a message
/// for people, and the request field at fault (JSON path such as
/// `recipients[3].email`). Sent as `{"error":{"code":…,"message":…,"field":…}}`.
struct APIError: Error, Equatable {
    var status: Int
    var code: String
    var message: String
    var field: String?
    /// Seconds for `Retry-After` (429, 503).
    var retryAfter: Int?
    /// Byte offset of a JSON syntax error (400).
    var offset: Int?

    init(_ status: Int, _ code: String, _ message: String, field: String? = nil, retryAfter: Int? = nil, offset: Int? = nil) {
        self.status = status; self.code = code; self.message = message; self.field = field
        self.retryAfter = retryAfter; self.offset = offset
    }

    var response: HTTPResponse {
        var members: [(key: String, value: JSONValue)] = [("code", .string(code)), ("message", .string(message))]
        if let field { members.append(("field", .string(field))) }
        if let offset { members.append(("offset", .int(offset))) }
        var r = HTTPResponse.json(JSONValue.object([("error", .object(members))]).serialized, status: status)
        if let retryAfter { r.headers.append(("Retry-After", String(retryAfter))) }
        if status == 401 { r.headers.append(("WWW-Authenticate", "Bearer realm=\"peregrine-api\"")) }
        // Shutting down: this loop may not be draining yet (the daemon decided first), so say it here.
        r.closesConnection = code == "shutting_down"
        return r
    }

    static func invalid(_ field: String, _ message: String) -> APIError { APIError(422, "invalid_field", message, field: field) }
}

/// A `POST /api/v1/messages` body, checked field by field before anything
/// is queued (the parse is pure: the handler applies the key's rights after).
struct HTTPInjectionRequest: Equatable {
    struct Recipient: Equatable {
        var address: String
        /// `{{name}}` → value, in the order given.
        var substitutions: [String: String]
    }
    enum Content: Equatable {
        /// A full RFC 5322 message, CRLF line ends.
        case raw([UInt8])
        case structured(MIMEContent)
    }

    var sender: String
    var recipients: [Recipient]
    var content: Content
    var jobID: String?
    var campaign: String?
    var tenant: String?
    var virtualMTA: String?
    /// false: do not DKIM-sign; nil/true: as configured.
    var dkim: Bool?

    static let topLevelFields: Set<String> = ["sender", "recipients", "raw", "content", "job_id", "campaign", "tenant",
                                              "virtual_mta", "dkim"]
    static let contentFields: Set<String> = ["from", "to", "cc", "reply_to", "subject", "text", "html", "headers", "attachments"]

    /// True when at least one recipient has substitutions (then one message per recipient).
    var hasSubstitutions: Bool { recipients.contains { !$0.substitutions.isEmpty } }

    static func parse(body: [UInt8], maxRecipients: Int) throws(APIError) -> HTTPInjectionRequest {
        let json: JSONValue
        do { json = try JSONParser.parse(body) } catch {
            throw APIError(400, "invalid_json", "the body is not valid JSON: \(error)", offset: error.offset)
        }
        return try decode(json, maxRecipients: maxRecipients)
    }

    static func decode(_ json: JSONValue, maxRecipients: Int) throws(APIError) -> HTTPInjectionRequest {
        guard case .object(let members) = json else {
            throw APIError(422, "invalid_type", "the body must be a JSON object, not \(json.typeName)")
        }
        for m in members where !topLevelFields.contains(m.key) {
            throw APIError(422, "unknown_field", "unknown field '\(m.key)'", field: m.key)
        }
        let sender = try address(required(json, "sender"), field: "sender")
        guard case .array(let items) = try required(json, "recipients") else {
            throw typeError("recipients", "an array", json["recipients"])
        }
        guard !items.isEmpty else { throw APIError.invalid("recipients", "at least one recipient is needed") }
        guard items.count <= maxRecipients else {
            throw APIError(422, "too_many_recipients",
                           "\(items.count) recipients is over this key's limit of \(maxRecipients) per call", field: "recipients")
        }
        var recipients: [Recipient] = []
        recipients.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            let field = "recipients[\(i)]"
            switch item {
            case .string:
                recipients.append(Recipient(address: try address(item, field: field), substitutions: [:]))
            case .object(let fields):
                for f in fields where f.key != "email" && f.key != "substitutions" {
                    throw APIError(422, "unknown_field", "unknown field '\(f.key)'", field: "\(field).\(f.key)")
                }
                let email = try address(required(item, "email", prefix: field), field: "\(field).email")
                var subs: [String: String] = [:]
                if let s = item["substitutions"] {
                    guard case .object(let pairs) = s else { throw typeError("\(field).substitutions", "an object", s) }
                    for (k, v) in pairs {
                        guard !k.isEmpty, k.utf8.count <= 64,
                              k.utf8.allSatisfy({ $0 == 95 || $0 == 45 || $0 == 46 || (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }) else {
                            throw APIError.invalid("\(field).substitutions", "substitution name '\(k)' must be 1-64 letters, digits, '_', '-' or '.'")
                        }
                        switch v {
                        case .string(let text): subs[k] = text
                        case .number(let d, let n): subs[k] = n.map { String($0) } ?? "\(d)"
                        default: throw typeError("\(field).substitutions.\(k)", "a string or number", v)
                        }
                    }
                }
                recipients.append(Recipient(address: email, substitutions: subs))
            default:
                throw typeError(field, "a string or an object with 'email'", item)
            }
        }
        let content: Content
        switch (json["raw"], json["content"]) {
        case (let raw?, nil):
            guard case .string(let text) = raw else { throw typeError("raw", "a string", raw) }
            content = .raw(try rawMessage(text))
        case (nil, let c?):
            content = .structured(try structured(c))
        case (nil, nil):
            throw APIError(422, "missing_field", "either 'raw' (a full RFC 5322 message) or 'content' is required", field: "content")
        case (_?, _?):
            throw APIError(422, "conflicting_fields", "give either 'raw' or 'content', not both", field: "raw")
        }
        var request = HTTPInjectionRequest(sender: sender, recipients: recipients, content: content)
        request.jobID = try tag(json, "job_id")
        request.campaign = try tag(json, "campaign")
        request.tenant = try tag(json, "tenant")
        request.virtualMTA = try tag(json, "virtual_mta")?.lowercased()
        if let d = json["dkim"] {
            guard case .bool(let b) = d else { throw typeError("dkim", "a boolean", d) }
            request.dkim = b
        }
        return request
    }

    // MARK: Fields

    static func typeError(_ field: String, _ expected: String, _ got: JSONValue?) -> APIError {
        APIError(422, "invalid_type", "'\(field)' must be \(expected), not \(got?.typeName ?? "missing")", field: field)
    }

    static func required(_ object: JSONValue, _ key: String, prefix: String? = nil) throws(APIError) -> JSONValue {
        guard let v = object[key] else {
            let field = prefix.map { "\($0).\(key)" } ?? key
            throw APIError(422, "missing_field", "'\(field)' is required", field: field)
        }
        return v
    }

    static func string(_ v: JSONValue, field: String) throws(APIError) -> String {
        guard case .string(let s) = v else { throw typeError(field, "a string", v) }
        return s
    }

    /// A short printable ASCII label (job id, campaign, tenant, VMTA name).
    static func tag(_ object: JSONValue, _ key: String) throws(APIError) -> String? {
        guard let v = object[key] else { return nil }
        let s = try string(v, field: key)
        guard !s.isEmpty, s.utf8.count <= 128, s.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw APIError.invalid(key, "'\(key)' must be 1-128 printable ASCII characters without spaces")
        }
        return s
    }

    /// `local@domain`, ASCII, no spaces or brackets; the domain a host name or an address literal.
    static func address(_ v: JSONValue, field: String) throws(APIError) -> String {
        let s = try string(v, field: field)
        guard isValidAddress(s) else {
            throw APIError(422, "invalid_address", "'\(String(s.prefix(80)))' is not a valid email address", field: field)
        }
        return s
    }

    static func isValidAddress(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count <= 254, let at = u.lastIndex(of: UInt8(ascii: "@")), at > 0, at <= 64, at < u.count - 1 else { return false }
        let local = u[..<at], domain = u[(at + 1)...]
        let forbidden: Set<UInt8> = Set("<>()[],;:\\\" ".utf8)
        guard local.allSatisfy({ $0 > 0x20 && $0 < 0x7f && !forbidden.contains($0) }),
              local.first != UInt8(ascii: "."), local.last != UInt8(ascii: ".") else { return false }
        if domain.first == UInt8(ascii: "[") {
            return domain.last == UInt8(ascii: "]") && domain.dropFirst().dropLast().allSatisfy {
                (48...57).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || (97...102).contains($0)
                    || (65...70).contains($0) || $0 == UInt8(ascii: "I") || $0 == UInt8(ascii: "P") || $0 == UInt8(ascii: "v")
            }
        }
        let labels = domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.count >= 1 && labels.allSatisfy { l in
            !l.isEmpty && l.count <= 63 && l.first != UInt8(ascii: "-") && l.last != UInt8(ascii: "-")
                && l.allSatisfy { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) || $0 == UInt8(ascii: "-") }
        }
    }

    /// The message with CRLF line ends; refused when it has no header
    /// section or a line over RFC 5322's 998 octets.
    static func rawMessage(_ text: String) throws(APIError) -> [UInt8] {
        guard !text.isEmpty else { throw APIError.invalid("raw", "the message is empty") }
        let lines = MIMEMessageBuilder.normalizedLines(text)
        for (n, l) in lines.enumerated() where l.count > 998 {
            throw APIError.invalid("raw", "line \(n + 1) is \(l.count) octets long; RFC 5322 allows 998")
        }
        guard let first = lines.first, let colon = first.firstIndex(of: UInt8(ascii: ":")), colon > 0,
              first[..<colon].allSatisfy({ $0 >= 33 && $0 <= 126 }) else {
            throw APIError.invalid("raw", "the message must start with a header field (Name: value)")
        }
        if first.contains(0) || lines.contains(where: { $0.contains(0) }) {
            throw APIError.invalid("raw", "the message contains a NUL byte")
        }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + lines.count)
        for (i, l) in lines.enumerated() {
            if i == lines.count - 1 && l.isEmpty { break }   // the text's final line end
            out.append(contentsOf: l)
            out.append(13); out.append(10)
        }
        return out
    }

    static func mailbox(_ v: JSONValue, field: String) throws(APIError) -> MIMEMailbox {
        switch v {
        case .string(let s):
            // "Name <a@b>" or a bare address.
            if s.hasSuffix(">"), let open = s.lastIndex(of: "<") {
                var name = String(s[..<open]).trimmingCharacters(of: " \t")
                if name.hasPrefix("\"") && name.hasSuffix("\"") && name.count >= 2 { name = String(name.dropFirst().dropLast()) }
                let addr = String(s[s.index(after: open)..<s.index(before: s.endIndex)])
                guard isValidAddress(addr) else { throw APIError(422, "invalid_address", "'\(String(addr.prefix(80)))' is not a valid email address", field: field) }
                try checkDisplayName(name, field: field)
                return MIMEMailbox(name: name.isEmpty ? nil : name, address: addr)
            }
            return MIMEMailbox(address: try address(v, field: field))
        case .object:
            let addr = try address(required(v, "email", prefix: field), field: "\(field).email")
            var name: String?
            if let n = v["name"] { name = try string(n, field: "\(field).name"); try checkDisplayName(name ?? "", field: "\(field).name") }
            return MIMEMailbox(name: name, address: addr)
        default:
            throw typeError(field, "a string or an object with 'email'", v)
        }
    }

    static func checkDisplayName(_ name: String, field: String) throws(APIError) {
        guard name.utf8.count <= 256, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw APIError.invalid(field, "the display name has control characters or is over 256 bytes")
        }
    }

    static func mailboxes(_ v: JSONValue?, field: String) throws(APIError) -> [MIMEMailbox] {
        guard let v else { return [] }
        switch v {
        case .array(let items):
            var out: [MIMEMailbox] = []
            for (i, item) in items.enumerated() { out.append(try mailbox(item, field: "\(field)[\(i)]")) }
            return out
        default:
            return [try mailbox(v, field: field)]
        }
    }

    static func structured(_ c: JSONValue) throws(APIError) -> MIMEContent {
        guard case .object(let members) = c else { throw typeError("content", "an object", c) }
        for m in members where !contentFields.contains(m.key) {
            throw APIError(422, "unknown_field", "unknown field '\(m.key)'", field: "content.\(m.key)")
        }
        var content = MIMEContent(from: try mailbox(required(c, "from", prefix: "content"), field: "content.from"))
        content.to = try mailboxes(c["to"], field: "content.to")
        content.cc = try mailboxes(c["cc"], field: "content.cc")
        if let r = c["reply_to"] { content.replyTo = try mailbox(r, field: "content.reply_to") }
        if let s = c["subject"] {
            content.subject = try string(s, field: "content.subject")
            guard !content.subject.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw APIError.invalid("content.subject", "the subject may not contain line breaks")
            }
        }
        if let t = c["text"] { content.text = try string(t, field: "content.text") }
        if let h = c["html"] { content.html = try string(h, field: "content.html") }
        guard content.text != nil || content.html != nil else {
            throw APIError(422, "missing_field", "'content.text' or 'content.html' is required", field: "content.text")
        }
        if let h = c["headers"] {
            guard case .object(let pairs) = h else { throw typeError("content.headers", "an object", h) }
            for (name, value) in pairs {
                let field = "content.headers.\(name)"
                guard MIMEMessageBuilder.isFieldName(name) else {
                    throw APIError.invalid(field, "'\(String(name.prefix(80)))' is not a header field name")
                }
                guard !MIMEMessageBuilder.reservedFieldNames.contains(name.lowercased()) else {
                    throw APIError.invalid(field, "\(name) is set from the content's own fields; it cannot be given in 'headers'")
                }
                let text = try string(value, field: field)
                guard !text.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }), text.utf8.count <= 900 else {
                    throw APIError.invalid(field, "a header value may not contain line breaks or exceed 900 bytes")
                }
                content.headers.append((name, text))
            }
        }
        if let a = c["attachments"] {
            guard case .array(let items) = a else { throw typeError("content.attachments", "an array", a) }
            for (i, item) in items.enumerated() {
                let field = "content.attachments[\(i)]"
                guard case .object(let fields) = item else { throw typeError(field, "an object", item) }
                for f in fields where !["filename", "content_type", "content", "content_id"].contains(f.key) {
                    throw APIError(422, "unknown_field", "unknown field '\(f.key)'", field: "\(field).\(f.key)")
                }
                let filename = try string(required(item, "filename", prefix: field), field: "\(field).filename")
                guard !filename.isEmpty, filename.utf8.count <= 255,
                      !filename.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                    throw APIError.invalid("\(field).filename", "a file name is 1-255 bytes without control characters")
                }
                var type = "application/octet-stream"
                if let t = item["content_type"] {
                    type = try string(t, field: "\(field).content_type").lowercased()
                    guard isMediaType(type) else {
                        throw APIError.invalid("\(field).content_type", "'\(String(type.prefix(80)))' is not a media type (type/subtype)")
                    }
                }
                let encoded = try string(required(item, "content", prefix: field), field: "\(field).content")
                // Standard base64; line breaks (as some encoders insert) are allowed.
                guard let data = Base64.decode(encoded.utf8.filter { $0 != 10 && $0 != 13 }) else {
                    throw APIError(422, "invalid_base64", "'\(field).content' is not valid base64", field: "\(field).content")
                }
                var cid: String?
                if let c = item["content_id"] {
                    cid = try string(c, field: "\(field).content_id")
                    guard let id = cid, !id.isEmpty, id.utf8.count <= 200, id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 60 && $0 != 62 }) else {
                        throw APIError.invalid("\(field).content_id", "a content id is printable ASCII without spaces or angle brackets")
                    }
                }
                content.attachments.append(MIMEAttachment(filename: filename, contentType: type, data: data, contentID: cid))
            }
        }
        return content
    }

    /// `type/subtype` of RFC 2045 tokens (no parameters).
    static func isMediaType(_ s: String) -> Bool {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        let tspecials = Set("()<>@,;:\\\"/[]?= ".utf8)
        return parts.count == 2 && parts.allSatisfy { p in
            !p.isEmpty && p.utf8.count <= 127 && p.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && !tspecials.contains($0) }
        }
    }
}

extension HTTPInjectionRequest.Recipient {
    /// `text` with every `{{name}}` replaced by its value (unknown names stay as written).
    func substitute(_ text: String) -> String {
        guard !substitutions.isEmpty, text.contains("{{") else { return text }
        var out = ""
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            let after = rest[open.upperBound...]
            if let close = after.range(of: "}}"), let value = substitutions[String(after[..<close.lowerBound]).trimmingCharacters(of: " ")] {
                out += value
                rest = after[close.upperBound...]
            } else {
                out += "{{"
                rest = after
            }
        }
        out += rest
        return out
    }
}

extension String {
    func trimmingCharacters(of set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
