import PeregrineIO

/// Just enough MIME (RFC 2045/2046) to read the reports that come back to a
/// sender: header fields (unfolded), Content-Type with its parameters, and
/// multipart bodies split at their boundary. Reports are small and rare, so
/// this favours clarity over speed; every bound comes from the input size.
public struct MIMEEntity: Sendable {
    /// Header fields in order; names as written.
    public var fields: [(name: String, value: String)]
    public var body: [UInt8]

    /// Splits `bytes` at the first empty line into unfolded fields and the body.
    public init(_ bytes: some Collection<UInt8>) {
        let all = Array(bytes)
        var fields: [(String, String)] = []
        var i = 0
        var current: (String, String)?
        func finish() { if let c = current { fields.append(c) }; current = nil }
        while i < all.count {
            var end = i
            while end < all.count && all[end] != 10 { end += 1 }
            var lineEnd = end
            if lineEnd > i && all[lineEnd - 1] == 13 { lineEnd -= 1 }
            let line = all[i..<lineEnd]
            let next = min(end + 1, all.count)
            if line.isEmpty { i = next; finish(); self.fields = fields; body = Array(all[i...]); return }
            if line.first == 32 || line.first == 9 {
                // RFC 5322 §2.2.3: a continuation line unfolds into the field before it.
                if current != nil { current!.1 += " " + Self.trim(String(decoding: line, as: UTF8.self)) }
            } else if let colon = line.firstIndex(of: 58) {
                finish()
                current = (Self.trim(String(decoding: all[i..<colon], as: UTF8.self)),
                           Self.trim(String(decoding: all[(colon + 1)..<lineEnd], as: UTF8.self)))
            } else {
                // Not a header line: the entity has no header section worth the name; the rest is body.
                finish(); self.fields = fields; body = Array(all[i...]); return
            }
            i = next
        }
        finish()
        self.fields = fields
        body = []
    }

    /// The first field named `name` (case-insensitive).
    public func field(_ name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    /// Lowercased media type, "text/plain" when absent (RFC 2045 §5.2).
    public var contentType: String {
        guard let v = field("Content-Type") else { return "text/plain" }
        return Self.trim(String(v.prefix { $0 != ";" })).lowercased()
    }

    /// A Content-Type parameter (name case-insensitive, quotes removed).
    public func contentTypeParameter(_ name: String) -> String? {
        guard let v = field("Content-Type") else { return nil }
        return Self.parameters(v)[name.lowercased()]
    }

    /// The parts of a multipart entity (empty for any other type or without a boundary).
    public var parts: [MIMEEntity] {
        guard contentType.hasPrefix("multipart/"), let boundary = contentTypeParameter("boundary"), !boundary.isEmpty else {
            return []
        }
        let delimiter = Array(("--" + boundary).utf8)
        var parts: [MIMEEntity] = []
        var start: Int?
        var i = 0
        let b = body
        while i < b.count {
            var end = i
            while end < b.count && b[end] != 10 { end += 1 }
            var lineEnd = end
            if lineEnd > i && b[lineEnd - 1] == 13 { lineEnd -= 1 }
            let line = b[i..<lineEnd]
            if line.starts(with: delimiter) {
                let rest = line.dropFirst(delimiter.count)
                if let s = start {
                    // The line break before the delimiter belongs to the delimiter (RFC 2046 §5.1.1).
                    var partEnd = i
                    if partEnd > s && b[partEnd - 1] == 10 { partEnd -= 1 }
                    if partEnd > s && b[partEnd - 1] == 13 { partEnd -= 1 }
                    parts.append(MIMEEntity(b[s..<partEnd]))
                }
                if rest.starts(with: [45, 45]) { return parts }
                start = min(end + 1, b.count)
            }
            i = end + 1
        }
        return parts
    }

    /// Splits the body into blocks of header fields separated by blank lines
    /// (message/delivery-status, message/feedback-report).
    public var fieldGroups: [MIMEEntity] {
        var groups: [MIMEEntity] = []
        var current: [UInt8] = []
        var i = 0
        let b = body
        while i <= b.count {
            var end = i
            while end < b.count && b[end] != 10 { end += 1 }
            var lineEnd = end
            if lineEnd > i && b[lineEnd - 1] == 13 { lineEnd -= 1 }
            if lineEnd == i {
                if !current.isEmpty { groups.append(MIMEEntity(current + [13, 10, 13, 10])); current = [] }
            } else {
                current += b[i..<lineEnd]; current += [13, 10]
            }
            i = end + 1
        }
        if !current.isEmpty { groups.append(MIMEEntity(current + [13, 10])) }
        return groups
    }

    /// Body text with a quoted-printable transfer encoding undone (what a
    /// plain-text bounce's reader sees); other encodings are returned as they are.
    public var decodedText: String {
        if field("Content-Transfer-Encoding")?.lowercased() == "quoted-printable" {
            var out: [UInt8] = []
            var i = 0
            let b = body
            while i < b.count {
                if b[i] == 61, i + 1 < b.count {
                    if b[i + 1] == 13 || b[i + 1] == 10 {
                        i += b[i + 1] == 13 && i + 2 < b.count && b[i + 2] == 10 ? 3 : 2
                        continue
                    }
                    if i + 2 < b.count, let h = b[i + 1].hexDigitValue, let l = b[i + 2].hexDigitValue { out.append(h << 4 | l); i += 3; continue }
                }
                out.append(b[i]); i += 1
            }
            return String(decoding: out, as: UTF8.self)
        }
        return String(decoding: body, as: UTF8.self)
    }

    static func parameters(_ value: String) -> [String: String] {
        var out: [String: String] = [:]
        var items: [String] = []
        var current = ""
        var quoted = false
        for ch in value {
            if ch == "\"" { quoted.toggle(); current.append(ch); continue }
            if ch == ";" && !quoted { items.append(current); current = ""; continue }
            current.append(ch)
        }
        items.append(current)
        for item in items.dropFirst() {
            guard let eq = item.firstIndex(of: "=") else { continue }
            let name = trim(String(item[..<eq])).lowercased()
            var v = trim(String(item[item.index(after: eq)...]))
            if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            out[name] = v
        }
        return out
    }

    static func trim(_ s: String) -> String {
        var sub = Substring(s)
        while let f = sub.first, f == " " || f == "\t" || f == "\r" || f == "\n" { sub = sub.dropFirst() }
        while let l = sub.last, l == " " || l == "\t" || l == "\r" || l == "\n" { sub = sub.dropLast() }
        return String(sub)
    }

    /// "rfc822; a@b" → "a@b"; "<a@b>" → "a@b".
    public static func address(_ value: String) -> String {
        var v = value
        if let semi = v.firstIndex(of: ";") { v = String(v[v.index(after: semi)...]) }
        v = trim(v)
        if let lt = v.firstIndex(of: "<"), let gt = v.lastIndex(of: ">"), lt < gt { v = String(v[v.index(after: lt)..<gt]) }
        return trim(v)
    }
}
