import PeregrineSMTP

/// `dsnStatus` and `dsnDiag` straight from an `SMTPReply`, byte for byte what
/// `AccountingRecord.dsnStatus(enhancedCode:replyCode:)` and
/// `AccountingRecord.dsnDiag(smtpReply:)` give for `reply.enhancedCode?.description`
/// and `reply.description`, without building those Strings.
extension AccountingLineEncoder {
    /// `2.0.0 (success)`; without an enhanced code `X.0.0` from the reply class.
    public mutating func dsnStatus(_ reply: SMTPReply) {
        let start = beginField()
        let cls: Int, subject: Int, detail: Int
        if let e = reply.enhancedCode {
            cls = Int(e.statusClass); subject = Int(e.subject); detail = Int(e.detail)
        } else {
            let c = reply.code / 100
            cls = (c == 2 || c == 4 || c == 5) ? c : 4
            subject = 0; detail = 0
        }
        rawDecimal(cls); raw(UInt8(ascii: "."))
        rawDecimal(subject); raw(UInt8(ascii: "."))
        rawDecimal(detail)
        raw(" (")
        raw(AccountingRecord.dsnStatusText(statusClass: cls, subject: subject, detail: detail))
        raw(UInt8(ascii: ")"))
        endField(start)
    }

    /// `smtp;250 2.0.0 OK`: the one-line reply, each run of CR/LF turned into
    /// one space, trailing spaces dropped.
    public mutating func dsnDiag(_ reply: SMTPReply) {
        let start = beginField()
        raw("smtp;")
        rawDecimal(reply.code)
        if let e = reply.enhancedCode {
            raw(UInt8(ascii: " "))
            rawDecimal(Int(e.statusClass)); raw(UInt8(ascii: "."))
            rawDecimal(Int(e.subject)); raw(UInt8(ascii: "."))
            rawDecimal(Int(e.detail))
        }
        let lines = reply.lines
        // `SMTPReply.description` adds the text only when the joined text is not empty.
        if lines.count > 1 || (lines.count == 1 && !lines[0].isEmpty) {
            raw(UInt8(ascii: " "))
            var lastWasBreak = false
            for (i, line) in lines.enumerated() {
                if i > 0 { raw(UInt8(ascii: " ")); lastWasBreak = false }
                rawCollapsingBreaks(line, lastWasBreak: &lastWasBreak)
            }
        }
        // "smtp;" ends in ';', so this never eats into the prefix.
        while bytes.count > start, bytes[bytes.count - 1] == 32 { bytes.removeLast() }
        endField(start)
    }

    private mutating func rawCollapsingBreaks(_ text: String, lastWasBreak: inout Bool) {
        var text = text
        text.withUTF8 { p in
            for b in p {
                if b == 13 || b == 10 {
                    if !lastWasBreak { bytes.append(32) }
                    lastWasBreak = true
                } else {
                    bytes.append(b)
                    lastWasBreak = false
                }
            }
        }
    }
}
