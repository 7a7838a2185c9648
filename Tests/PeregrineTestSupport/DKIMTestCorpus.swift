/// Messages that exercise DKIM canonicalisation: folded header fields,
/// whitespace runs, long lines, an empty body, 8-bit content, 100 KB. Every
/// one has a Date and exactly one From (opendkim-testmsg insists on both).
public enum DKIMTestCorpus {
    public struct Message: Sendable {
        public var name: String
        public var bytes: [UInt8]
    }

    static let date = "Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n"

    public static func messages(fromDomain: String = "example.com") -> [Message] {
        let from = "From: Sender <news@\(fromDomain)>\r\n"
        var out: [Message] = []
        out.append(Message(name: "plain", bytes: Array((
            from + "To: rcpt@example.net\r\nSubject: plain message\r\n" + date
            + "Message-ID: <plain.1@\(fromDomain)>\r\n"
            + "List-Unsubscribe: <https://\(fromDomain)/u/1>, <mailto:unsub@\(fromDomain)>\r\n"
            + "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            + "\r\nHello,\r\nthis is a test.\r\n.a line that starts with a dot (stuffed on the wire)\r\n").utf8)))
        out.append(Message(name: "folded", bytes: Array((
            from + "To: first@example.net,\r\n\tsecond@example.net,\r\n   third@example.net\r\n"
            + "Subject:   a   subject\twith  runs \r\n of\t whitespace   \r\n\tand folds  \r\n" + date
            + "X-Trailing: value with trailing blanks \t \r\n"
            + "\r\n  leading blanks\r\nruns  \t of \t  blanks   \r\n\t\r\ntrailing blank lines follow\r\n\r\n \r\n\r\n").utf8)))
        out.append(Message(name: "long-lines", bytes: Array((
            from + "To: rcpt@example.net\r\nSubject: " + String(repeating: "long subject ", count: 70) + "\r\n" + date
            + "\r\n" + String(repeating: "x", count: 990) + "\r\n" + String(repeating: "word ", count: 190) + "\r\n").utf8)))
        out.append(Message(name: "empty-body", bytes: Array((
            from + "To: rcpt@example.net\r\nSubject: empty body\r\n" + date + "\r\n").utf8)))
        out.append(Message(name: "8bit", bytes: Array((
            from + "To: rcpt@example.net\r\nSubject: Grüße aus Zürich – ½ €\r\n" + date
            + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            + "\r\nGrüße, naïve café, 東京, emoji 🦅.\r\nÿþ\r\n").utf8)))
        var big = from + "To: rcpt@example.net\r\nSubject: one hundred kilobytes\r\n" + date + "\r\n"
        var n = 0
        while big.utf8.count < 100 * 1024 {
            big += "line \(n) " + String(repeating: "abcdefghij", count: 6) + "\r\n"
            n += 1
        }
        out.append(Message(name: "100k", bytes: Array(big.utf8)))
        return out
    }

    /// One body byte changed (or a line added to an empty body).
    public static func tamperedBody(_ message: [UInt8]) -> [UInt8] {
        var m = message
        guard let end = headerEnd(m) else { return m + Array("x\r\n".utf8) }
        if end >= m.count { return m + Array("tampered\r\n".utf8) }
        // The first letter of the body, so that relaxed canonicalisation sees it.
        for i in end..<m.count where (65...90).contains(m[i]) || (97...122).contains(m[i]) {
            m[i] = m[i] == UInt8(ascii: "z") ? UInt8(ascii: "y") : m[i] + 1
            return m
        }
        return m + Array("tampered\r\n".utf8)
    }

    /// One letter of the Subject changed (a field every signer here signs).
    public static func tamperedHeader(_ message: [UInt8]) -> [UInt8] {
        var m = message
        let needle = Array("\nSubject:".utf8)
        guard let at = (0..<(m.count - needle.count)).first(where: { Array(m[$0..<$0 + needle.count]) == needle }) else { return m }
        for i in (at + needle.count)..<m.count where (97...122).contains(m[i]) {
            m[i] = m[i] == UInt8(ascii: "z") ? UInt8(ascii: "y") : m[i] + 1
            return m
        }
        return m
    }

    /// Offset of the first body byte.
    public static func headerEnd(_ m: [UInt8]) -> Int? {
        guard m.count >= 4 else { return nil }
        for i in 0...(m.count - 4) where m[i] == 13 && m[i + 1] == 10 && m[i + 2] == 13 && m[i + 3] == 10 { return i + 4 }
        return nil
    }
}
