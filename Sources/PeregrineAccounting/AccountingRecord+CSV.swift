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
        var line = AccountingLineEncoder(capacity: 256)
        encodeCSV(into: &line)
        out.append(contentsOf: line.bytes)
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
                  dlvTlsProtocol: row["dlvTlsProtocol"] ?? "", dlvTlsCipher: row["dlvTlsCipher"] ?? "",
                  vmtaPool: row["vmtaPool"] ?? "")
        rcvSmtpUser = row["rcvSmtpUser"] ?? ""
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

extension AccountingRecord: AccountingRecordEncodable {
    public var accountingType: AccountingRecordType { type }

    public func encodeCSV(into line: inout AccountingLineEncoder) {
        line.field(type.rawValue); line.comma()
        line.timestamp(timeLogged); line.comma()
        line.timestamp(timeQueued); line.comma()
        line.field(orig); line.comma()
        line.field(rcpt); line.comma()
        line.field(orcpt); line.comma()
        line.field(dsnAction); line.comma()
        line.field(dsnStatus); line.comma()
        line.field(dsnDiag); line.comma()
        line.field(dsnMta); line.comma()
        line.field(bounceCat); line.comma()
        line.field(srcType); line.comma()
        line.field(srcMta); line.comma()
        line.field(dlvType); line.comma()
        line.field(dlvSourceIp); line.comma()
        line.field(dlvDestinationIp); line.comma()
        line.field(dlvEsmtpAvailable); line.comma()
        line.integer(dlvSize.map { Int64($0) }); line.comma()
        line.field(vmta); line.comma()
        line.field(jobId); line.comma()
        line.field(envId); line.comma()
        line.timestamp(timeFirstAttempt); line.comma()
        line.integer(totalSecondsQueued); line.comma()
        line.field(queue); line.comma()
        line.field(dlvTlsProtocol); line.comma()
        line.field(dlvTlsCipher); line.comma()
        line.field(rcvSmtpUser); line.comma()
        line.field(vmtaPool)
        line.endLine()
    }
}
