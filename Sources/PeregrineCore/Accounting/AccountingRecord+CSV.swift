/// RFC 4180 encoding of accounting records, straight into bytes.
extension AccountingRecord {
    /// The header line (with CRLF), as the first line of every accounting file.
    public static var csvHeader: [UInt8] {
        var out: [UInt8] = []
        for (i, name) in fieldNames.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            AccountingCSV.appendField(name, to: &out)
        }
        out.append(13); out.append(10)
        return out
    }

    /// Appends this record as one CSV line (terminated by CRLF) to `out`.
    public func appendCSV(to out: inout [UInt8]) {
        let comma = UInt8(ascii: ",")
        AccountingCSV.appendField(type.rawValue, to: &out); out.append(comma)
        AccountingTimestamp.append(timeLogged, to: &out); out.append(comma)
        if let t = timeQueued { AccountingTimestamp.append(t, to: &out) }; out.append(comma)
        AccountingCSV.appendField(orig, to: &out); out.append(comma)
        AccountingCSV.appendField(rcpt, to: &out); out.append(comma)
        AccountingCSV.appendField(orcpt, to: &out); out.append(comma)
        AccountingCSV.appendField(dsnAction, to: &out); out.append(comma)
        AccountingCSV.appendField(dsnStatus, to: &out); out.append(comma)
        AccountingCSV.appendField(dsnDiag, to: &out); out.append(comma)
        AccountingCSV.appendField(dsnMta, to: &out); out.append(comma)
        AccountingCSV.appendField(bounceCat, to: &out); out.append(comma)
        AccountingCSV.appendField(srcType, to: &out); out.append(comma)
        AccountingCSV.appendField(srcMta, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvType, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvSourceIp, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvDestinationIp, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvEsmtpAvailable, to: &out); out.append(comma)
        if let s = dlvSize { AccountingCSV.appendInteger(Int64(s), to: &out) }; out.append(comma)
        AccountingCSV.appendField(vmta, to: &out); out.append(comma)
        AccountingCSV.appendField(jobId, to: &out); out.append(comma)
        AccountingCSV.appendField(envId, to: &out); out.append(comma)
        if let t = timeFirstAttempt { AccountingTimestamp.append(t, to: &out) }; out.append(comma)
        if let s = totalSecondsQueued { AccountingCSV.appendInteger(s, to: &out) }; out.append(comma)
        AccountingCSV.appendField(queue, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvTlsProtocol, to: &out); out.append(comma)
        AccountingCSV.appendField(dlvTlsCipher, to: &out)
        out.append(13); out.append(10)
    }

    /// The record as one CSV line (with CRLF).
    public var csvLine: String {
        var out: [UInt8] = []
        appendCSV(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Rebuilds a record from a parsed row (the inverse of `appendCSV`).
    /// Fails with the column name when a field is malformed.
    public init(csvRow row: AccountingCSVRow) throws(AccountingError) {
        guard let type = AccountingRecordType(code: row["type"] ?? "") else {
            throw AccountingError.malformedRecord(line: row.line, field: "type", value: row["type"] ?? "")
        }
        func time(_ name: String) throws(AccountingError) -> Int64? {
            guard let text = row[name], !text.isEmpty else { return nil }
            guard let t = AccountingTimestamp.parse(text) else {
                throw AccountingError.malformedRecord(line: row.line, field: name, value: text)
            }
            return t
        }
        func int(_ name: String) throws(AccountingError) -> Int64? {
            guard let text = row[name], !text.isEmpty else { return nil }
            guard let v = Int64(text) else {
                throw AccountingError.malformedRecord(line: row.line, field: name, value: text)
            }
            return v
        }
        guard let logged = try time("timeLogged") else {
            throw AccountingError.malformedRecord(line: row.line, field: "timeLogged", value: "")
        }
        self.init(type: type, timeLogged: logged, timeQueued: try time("timeQueued"),
                  orig: row["orig"] ?? "", rcpt: row["rcpt"] ?? "", orcpt: row["orcpt"] ?? "",
                  dsnAction: row["dsnAction"] ?? "", dsnStatus: row["dsnStatus"] ?? "",
                  dsnDiag: row["dsnDiag"] ?? "", dsnMta: row["dsnMta"] ?? "",
                  bounceCat: row["bounceCat"] ?? "", srcType: row["srcType"] ?? "", srcMta: row["srcMta"] ?? "",
                  dlvType: row["dlvType"] ?? "", dlvSourceIp: row["dlvSourceIp"] ?? "",
                  dlvDestinationIp: row["dlvDestinationIp"] ?? "",
                  dlvEsmtpAvailable: row["dlvEsmtpAvailable"] ?? "",
                  dlvSize: try int("dlvSize").map { Int($0) },
                  vmta: row["vmta"] ?? "", jobId: row["jobId"] ?? "", envId: row["envId"] ?? "",
                  timeFirstAttempt: try time("timeFirstAttempt"),
                  totalSecondsQueued: try int("totalSecondsQueued"),
                  queue: row["queue"] ?? "",
                  dlvTlsProtocol: row["dlvTlsProtocol"] ?? "", dlvTlsCipher: row["dlvTlsCipher"] ?? "")
    }
}

/// RFC 4180 field encoding.
public enum AccountingCSV {
    /// Appends `value`, quoted (with `"` doubled) when it contains a comma,
    /// a double quote, CR or LF, or starts/ends with a space.
    @inlinable
    public static func appendField(_ value: String, to out: inout [UInt8]) {
        var value = value
        value.withUTF8 { bytes in
            var needsQuotes = false
            for b in bytes where b == 44 || b == 34 || b == 13 || b == 10 {
                needsQuotes = true
                break
            }
            if !needsQuotes, let f = bytes.first, let l = bytes.last, f == 32 || l == 32 { needsQuotes = true }
            if !needsQuotes {
                out.append(contentsOf: bytes)
                return
            }
            out.append(34)
            for b in bytes {
                if b == 34 { out.append(34) }
                out.append(b)
            }
            out.append(34)
        }
    }

    @inlinable
    public static func appendInteger(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var v = value.magnitude
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes of scratch, enough for 20 digits
        withUnsafeMutableBytes(of: &tmp) { p in
            var i = p.count
            repeat {
                i -= 1
                p[i] = UInt8(48 + v % 10)
                v /= 10
            } while v > 0
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[i...]))
        }
    }
}
