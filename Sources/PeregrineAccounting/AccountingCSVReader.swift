#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// One data row of an accounting file, addressable by column name.
public struct AccountingCSVRow: Hashable, Sendable {
    /// The column names of the file's header.
    public let header: [String]
    public let fields: [String]
    /// 1-based line number of the row's first line in the file.
    public let line: Int

    public init(header: [String], fields: [String], line: Int) {
        self.header = header; self.fields = fields; self.line = line
    }

    /// The value of column `name`, nil when the file has no such column or the row is short.
    public subscript(name: String) -> String? {
        guard let i = header.firstIndex(of: name), i < fields.count else { return nil }
        return fields[i]
    }

    /// The row as a record.
    public func record() throws(AccountingError) -> AccountingRecord {
        try AccountingRecord(csvRow: self)
    }
}

/// Reads accounting files back: an RFC 4180 parser (quoted fields, doubled
/// quotes, CR/LF inside quotes, CRLF or LF line ends). For tests, the
/// end-to-end suite and operator tooling; not on the hot path.
public enum AccountingCSVReader {
    /// Splits CSV bytes into rows of fields. Each row carries its 1-based starting line.
    public static func parseRows(_ bytes: [UInt8]) throws(AccountingError) -> [(line: Int, fields: [String])] {
        var rows: [(line: Int, fields: [String])] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var i = 0
        var line = 1
        var rowLine = 1
        var inQuotes = false
        var fieldWasQuoted = false
        var rowHasContent = false
        let n = bytes.count
        func endField() {
            fields.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
            fieldWasQuoted = false
        }
        while i < n {
            let b = bytes[i]
            if inQuotes {
                if b == 34 {
                    if i + 1 < n, bytes[i + 1] == 34 {
                        field.append(34); i += 2; continue
                    }
                    inQuotes = false
                    i += 1
                    // After a closing quote only a separator or line end may follow.
                    if i < n, bytes[i] != 44, bytes[i] != 10, bytes[i] != 13 {
                        throw AccountingError.malformedCSV(line: line, reason: "text after closing quote")
                    }
                    continue
                }
                if b == 10 { line += 1 }
                field.append(b)
                i += 1
                continue
            }
            switch b {
            case 44:
                endField(); rowHasContent = true; i += 1
            case 34:
                guard field.isEmpty, !fieldWasQuoted else {
                    throw AccountingError.malformedCSV(line: line, reason: "quote inside an unquoted field")
                }
                inQuotes = true; fieldWasQuoted = true; rowHasContent = true; i += 1
            case 13, 10:
                if b == 13, i + 1 < n, bytes[i + 1] == 10 { i += 1 }
                i += 1
                if rowHasContent || !field.isEmpty {
                    endField()
                    rows.append((rowLine, fields))
                    fields.removeAll()
                }
                rowHasContent = false
                line += 1
                rowLine = line
            default:
                field.append(b); rowHasContent = true; i += 1
            }
        }
        if inQuotes { throw AccountingError.malformedCSV(line: rowLine, reason: "unterminated quoted field") }
        if rowHasContent || !field.isEmpty {
            endField()
            rows.append((rowLine, fields))
        }
        return rows
    }

    /// Parses a whole accounting file's content: the header, then rows keyed by it.
    /// Header lines repeated later in the data (after a concatenation of files) are skipped.
    public static func parse(_ bytes: [UInt8]) throws(AccountingError) -> [AccountingCSVRow] {
        let raw = try parseRows(bytes)
        guard let first = raw.first, first.fields.first == "type" else {
            if raw.isEmpty { return [] }
            throw AccountingError.missingHeader(path: "<bytes>")
        }
        var out: [AccountingCSVRow] = []
        out.reserveCapacity(raw.count - 1)
        for r in raw.dropFirst() where r.fields.first != "type" {
            out.append(AccountingCSVRow(header: first.fields, fields: r.fields, line: r.line))
        }
        return out
    }

    public static func parse(_ text: String) throws(AccountingError) -> [AccountingCSVRow] {
        try parse(Array(text.utf8))
    }

    /// Reads and parses the file at `path`.
    public static func read(path: String) throws(AccountingError) -> [AccountingCSVRow] {
        let bytes = try readBytes(path: path)
        do {
            return try parse(bytes)
        } catch .missingHeader {
            throw AccountingError.missingHeader(path: path)
        }
    }

    /// Reads and parses every row of the file as a record.
    public static func readRecords(path: String) throws(AccountingError) -> [AccountingRecord] {
        var out: [AccountingRecord] = []
        for row in try read(path: path) { out.append(try row.record()) }
        return out
    }

    static func readBytes(path: String) throws(AccountingError) -> [UInt8] {
        do {
            return try Posix.readFile(path)
        } catch {
            throw AccountingError.io(path: path, operation: error.operation, errno: error.errnoValue ?? EIO)
        }
    }
}
