import PeregrineIO

/// One attachment of a structured message: the decoded bytes, sent base64.
public struct MIMEAttachment: Hashable, Sendable {
    public var filename: String
    /// `type/subtype` (already checked by the caller: a token, a slash, a token).
    public var contentType: String
    public var data: [UInt8]
    /// Set for an inline part an HTML body refers to as `cid:…`.
    public var contentID: String?
    public init(filename: String, contentType: String, data: [UInt8], contentID: String? = nil) {
        self.filename = filename; self.contentType = contentType; self.data = data; self.contentID = contentID
    }
}

/// A mailbox as the API takes it: an address and an optional display name.
public struct MIMEMailbox: Hashable, Sendable {
    public var name: String?
    public var address: String
    public init(name: String? = nil, address: String) { self.name = name; self.address = address }
}

/// What the HTTP API's structured content says; `MIMEMessageBuilder` turns it into RFC 5322 bytes.
public struct MIMEContent: Hashable, Sendable {
    public var from: MIMEMailbox
    public var to: [MIMEMailbox] = []
    public var cc: [MIMEMailbox] = []
    public var replyTo: MIMEMailbox?
    public var subject: String = ""
    public var text: String?
    public var html: String?
    /// Extra header fields in order (names checked by the caller with `isFieldName`).
    public var headers: [(name: String, value: String)] = []
    public var attachments: [MIMEAttachment] = []

    public init(from: MIMEMailbox) { self.from = from }

    public static func == (a: MIMEContent, b: MIMEContent) -> Bool {
        a.from == b.from && a.to == b.to && a.cc == b.cc && a.replyTo == b.replyTo && a.subject == b.subject
            && a.text == b.text && a.html == b.html && a.attachments == b.attachments
            && a.headers.elementsEqual(b.headers, by: { $0 == $1 })
    }
    public func hash(into h: inout Hasher) { h.combine(from); h.combine(subject); h.combine(text); h.combine(html) }
}

/// Builds a MIME message (RFC 2045-2049, 5322) from `MIMEContent`, as bytes
/// with CRLF line ends, every line at most 78 octets except a header field
/// an encoded-word cannot split (never over 998):
///
/// - text only or html only: one `text/…; charset=utf-8` part; both:
///   `multipart/alternative` (text first, as RFC 2046 §5.1.4 orders by
///   preference); attachments: `multipart/mixed` around that body.
/// - Text bodies go 7bit when they are ASCII with short lines, else
///   quoted-printable; attachments base64 in 76-character lines.
/// - Non-ASCII header text becomes RFC 2047 `=?UTF-8?B?…?=` words (display
///   names and unstructured fields; never the address itself), and
///   non-ASCII file names RFC 2231 `filename*=UTF-8''…`.
/// - Boundaries start with `=_`, which neither quoted-printable nor base64
///   can produce; a 7bit part containing `=_` is sent quoted-printable instead.
///
/// Pure: the Message-ID, Date and boundary seed come from the caller.
public enum MIMEMessageBuilder {
    /// Fields the builder writes itself; a caller's `headers` may not set them.
    public static let reservedFieldNames: Set<String> = [
        "mime-version", "content-type", "content-transfer-encoding", "from", "to", "cc", "subject", "reply-to",
    ]

    /// - Parameters:
    ///   - messageID: the whole field value, e.g. `<abc@host>`, used when `headers` has no Message-ID.
    ///   - date: an RFC 5322 date-time, used when `headers` has no Date.
    ///   - boundarySeed: distinct per message (e.g. the Message-ID's unique part), ASCII letters and digits.
    public static func build(_ content: MIMEContent, messageID: String, date: String, boundarySeed: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024 + (content.text?.utf8.count ?? 0) * 2 + (content.html?.utf8.count ?? 0) * 2
                            + content.attachments.reduce(0) { $0 + $1.data.count * 4 / 3 + 256 })
        let has = Set(content.headers.map { $0.name.lowercased() })
        appendAddressField("From", [content.from], into: &out)
        if !content.to.isEmpty { appendAddressField("To", content.to, into: &out) }
        if !content.cc.isEmpty { appendAddressField("Cc", content.cc, into: &out) }
        if let r = content.replyTo { appendAddressField("Reply-To", [r], into: &out) }
        appendUnstructuredField("Subject", content.subject, into: &out)
        if !has.contains("date") { appendRaw("Date: \(date)\r\n", into: &out) }
        if !has.contains("message-id") { appendRaw("Message-ID: \(messageID)\r\n", into: &out) }
        for (name, value) in content.headers { appendUnstructuredField(name, value, into: &out) }
        appendRaw("MIME-Version: 1.0\r\n", into: &out)

        let alternative = "=_alt_" + boundarySeed, mixed = "=_mix_" + boundarySeed
        func appendBody(into out: inout [UInt8]) {
            switch (content.text, content.html) {
            case (let t?, let h?):
                appendRaw("Content-Type: multipart/alternative; boundary=\"\(alternative)\"\r\n\r\n", into: &out)
                appendRaw("--\(alternative)\r\n", into: &out)
                appendTextPart(t, subtype: "plain", into: &out)
                appendRaw("\r\n--\(alternative)\r\n", into: &out)
                appendTextPart(h, subtype: "html", into: &out)
                appendRaw("\r\n--\(alternative)--\r\n", into: &out)
            case (let t?, nil):
                appendTextPart(t, subtype: "plain", into: &out)
            case (nil, let h?):
                appendTextPart(h, subtype: "html", into: &out)
            case (nil, nil):
                appendTextPart("", subtype: "plain", into: &out)
            }
        }
        if content.attachments.isEmpty {
            appendBody(into: &out)
        } else {
            appendRaw("Content-Type: multipart/mixed; boundary=\"\(mixed)\"\r\n\r\n", into: &out)
            appendRaw("This is a multi-part message in MIME format.\r\n", into: &out)
            appendRaw("--\(mixed)\r\n", into: &out)
            appendBody(into: &out)
            for a in content.attachments {
                appendRaw("\r\n--\(mixed)\r\n", into: &out)
                appendAttachment(a, into: &out)
            }
            appendRaw("\r\n--\(mixed)--\r\n", into: &out)
        }
        if out.last != 10 { appendRaw("\r\n", into: &out) }
        return out
    }

    // MARK: Header fields

    /// RFC 5322 field name: printable ASCII except colon.
    public static func isFieldName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 76 && name.utf8.allSatisfy { $0 >= 33 && $0 <= 126 && $0 != UInt8(ascii: ":") }
    }

    static func appendRaw(_ s: String, into out: inout [UInt8]) { out.append(contentsOf: s.utf8) }

    /// `Name: value`, folded at spaces to stay within 78 octets; non-ASCII
    /// (or a value with control characters) as encoded-words.
    public static func appendUnstructuredField(_ name: String, _ value: String, into out: inout [UInt8]) {
        appendRaw(name + ":", into: &out)
        let needsEncoding = value.utf8.contains { $0 >= 0x80 || ($0 < 0x20 && $0 != 9) || $0 == 0x7f }
            || value.contains("=?")
        if needsEncoding {
            appendEncodedWords(value, lineUsed: name.utf8.count + 1, into: &out)
        } else {
            appendFolded(value, lineUsed: name.utf8.count + 1, into: &out)
        }
        appendRaw("\r\n", into: &out)
    }

    /// ` word word…` folded before a word that would pass column 78.
    static func appendFolded(_ value: String, lineUsed: Int, into out: inout [UInt8]) {
        var used = lineUsed
        let words = value.split(separator: " ", omittingEmptySubsequences: false)
        for (i, w) in words.enumerated() {
            let n = w.utf8.count
            if i > 0 && used + 1 + n > 78 && used > 1 {
                appendRaw("\r\n", into: &out)
                used = 0
            }
            out.append(32)
            out.append(contentsOf: w.utf8)
            used += 1 + n
        }
        if words.isEmpty { out.append(32) }
    }

    /// RFC 2047 B-encoded words of at most 75 characters, each on its own
    /// folded line; the text is split between Unicode scalars (never inside a
    /// UTF-8 sequence, §5 rule 3).
    static func appendEncodedWords(_ text: String, lineUsed: Int, into out: inout [UInt8]) {
        // A continuation line: " =?UTF-8?B?" + 60 base64 characters (45 bytes) + "?=" = 73 ≤ 78,
        // the word itself 72 ≤ 75. The first word shares its line with the field name.
        var maxChunk = min(45, (78 - lineUsed - 13) / 4 * 3)
        var first = true
        if maxChunk < 3 {
            // No room after a long field name: start on a continuation line.
            appendRaw("\r\n", into: &out)
            maxChunk = 45
        }
        var chunk: [UInt8] = []
        func flush() {
            if !first { appendRaw("\r\n", into: &out) }
            appendRaw(" =?UTF-8?B?", into: &out)
            chunk.withUnsafeBytes { Base64.encode($0, into: &out) }
            appendRaw("?=", into: &out)
            first = false
            maxChunk = 45
            chunk.removeAll(keepingCapacity: true)
        }
        for scalar in text.unicodeScalars {
            let bytes = Array(String(scalar).utf8)
            if chunk.count + bytes.count > maxChunk && !chunk.isEmpty { flush() }
            chunk.append(contentsOf: bytes)
        }
        if !chunk.isEmpty || first { flush() }
    }

    /// `Name: a@b, "Display" <c@d>` with display names quoted or encoded as needed.
    static func appendAddressField(_ name: String, _ boxes: [MIMEMailbox], into out: inout [UInt8]) {
        appendRaw(name + ":", into: &out)
        for (i, box) in boxes.enumerated() {
            if i > 0 { appendRaw(",\r\n", into: &out) }
            if let display = box.name, !display.isEmpty {
                if display.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value != 0x7f }) {
                    appendRaw(" " + quotedPhrase(display), into: &out)
                } else {
                    appendEncodedWords(display, lineUsed: name.utf8.count + 1, into: &out)
                    appendRaw("\r\n", into: &out)
                }
                appendRaw(" <\(box.address)>", into: &out)
            } else {
                appendRaw(" \(box.address)", into: &out)
            }
        }
        appendRaw("\r\n", into: &out)
    }

    /// An ASCII display name as atoms when it is only atext and spaces, else a quoted-string.
    static func quotedPhrase(_ s: String) -> String {
        let atextSpecials = Set("!#$%&'*+-/=?^_`{|}~ ".unicodeScalars)
        if s.unicodeScalars.allSatisfy({ ($0.properties.isAlphabetic && $0.isASCII) || ("0"..."9").contains($0) || atextSpecials.contains($0) }),
           !s.hasPrefix(" "), !s.hasSuffix(" ") {
            return s
        }
        var q = "\""
        for c in s.unicodeScalars {
            if c == "\"" || c == "\\" { q.unicodeScalars.append("\\") }
            q.unicodeScalars.append(c)
        }
        return q + "\""
    }

    // MARK: Bodies

    static func appendTextPart(_ text: String, subtype: String, into out: inout [UInt8]) {
        let lines = normalizedLines(text)
        let plain = lines.allSatisfy { l in l.count <= 78 && l.allSatisfy { $0 < 0x80 && ($0 >= 0x20 || $0 == 9) && $0 != 0x7f } }
            && !containsBoundaryMarker(lines)
        appendRaw("Content-Type: text/\(subtype); charset=utf-8\r\n", into: &out)
        if plain {
            appendRaw("Content-Transfer-Encoding: 7bit\r\n\r\n", into: &out)
            for (i, l) in lines.enumerated() {
                if i > 0 { appendRaw("\r\n", into: &out) }
                out.append(contentsOf: l)
            }
        } else {
            appendRaw("Content-Transfer-Encoding: quoted-printable\r\n\r\n", into: &out)
            for (i, l) in lines.enumerated() {
                if i > 0 { appendRaw("\r\n", into: &out) }
                appendQuotedPrintableLine(l, into: &out)
            }
        }
    }

    static func containsBoundaryMarker(_ lines: [[UInt8]]) -> Bool {
        lines.contains { l in l.count >= 2 && zip(l, l.dropFirst()).contains { $0 == UInt8(ascii: "=") && $1 == UInt8(ascii: "_") } }
    }

    /// The text's lines without their ends (CRLF, LF or a lone CR each end a line).
    public static func normalizedLines(_ text: String) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        var previousCR = false
        for b in text.utf8 {
            if b == 10 {
                if previousCR { previousCR = false; continue }
                lines.append(current); current.removeAll(keepingCapacity: true)
            } else if b == 13 {
                lines.append(current); current.removeAll(keepingCapacity: true)
                previousCR = true
                continue
            } else {
                current.append(b)
            }
            previousCR = false
        }
        lines.append(current)
        return lines
    }

    /// One line quoted-printable (RFC 2045 §6.7): at most 76 characters per
    /// output line (soft breaks `=`), trailing space and tab encoded, and a
    /// leading `.` encoded too so the line survives careless dot-stuffers.
    public static func appendQuotedPrintableLine(_ line: [UInt8], into out: inout [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        var used = 0
        for (i, b) in line.enumerated() {
            let last = i == line.count - 1
            let literal = (b >= 33 && b <= 126 && b != UInt8(ascii: "=")) || ((b == 32 || b == 9) && !last)
            let encodeDot = b == UInt8(ascii: ".") && used == 0
            let width = literal && !encodeDot ? 1 : 3
            // Room for the soft break's "=" unless this is the line's last character.
            if used + width > (last ? 76 : 75) {
                appendRaw("=\r\n", into: &out)
                used = 0
            }
            if literal && !(b == UInt8(ascii: ".") && used == 0) {
                out.append(b)
                used += 1
            } else {
                out.append(UInt8(ascii: "="))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
                used += 3
            }
        }
    }

    static func appendAttachment(_ a: MIMEAttachment, into out: inout [UInt8]) {
        let ascii = a.filename.unicodeScalars.allSatisfy { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7f }
        let nameParameter: String
        if ascii {
            var q = "\""
            for c in a.filename.unicodeScalars {
                if c == "\"" || c == "\\" { q.unicodeScalars.append("\\") }
                q.unicodeScalars.append(c)
            }
            nameParameter = "filename=" + q + "\""
        } else {
            nameParameter = "filename*=UTF-8''" + rfc2231Encode(a.filename)
        }
        appendRaw("Content-Type: \(a.contentType)\r\n", into: &out)
        appendRaw("Content-Transfer-Encoding: base64\r\n", into: &out)
        appendRaw("Content-Disposition: \(a.contentID == nil ? "attachment" : "inline");\r\n \(nameParameter)\r\n", into: &out)
        if let cid = a.contentID { appendRaw("Content-ID: <\(cid)>\r\n", into: &out) }
        appendRaw("\r\n", into: &out)
        appendBase64Lines(a.data, into: &out)
    }

    /// Base64 in lines of 76 characters (RFC 2045 §6.8), CRLF between them.
    public static func appendBase64Lines(_ data: [UInt8], into out: inout [UInt8]) {
        var offset = 0
        while offset < data.count {
            let end = min(offset + 57, data.count)   // 57 bytes → 76 characters
            if offset > 0 { appendRaw("\r\n", into: &out) }
            data.withUnsafeBytes { Base64.encode(UnsafeRawBufferPointer(rebasing: $0[offset..<end]), into: &out) }
            offset = end
        }
    }

    /// RFC 2231 / 5987 percent-encoding of a parameter value (attr-char kept).
    static func rfc2231Encode(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF")
        var out = ""
        for b in s.utf8 {
            switch b {
            case 48...57, 65...90, 97...122, UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "&"),
                 UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
                 UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out.append("%"); out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            }
        }
        return out
    }
}
