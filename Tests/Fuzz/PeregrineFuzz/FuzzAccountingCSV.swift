// Fuzz target: the accounting CSV reader on damaged or foreign files
// (operators feed it rotated, truncated and hand-edited files). Oracle
// besides "no crash": rows it accepts, written back with RFC 4180 quoting,
// parse to the same rows.
import PeregrineAccounting

func quoted(_ rows: [(line: Int, fields: [String])]) -> [UInt8] {
    var out: [UInt8] = []
    for row in rows {
        for (i, field) in row.fields.enumerated() {
            if i > 0 { out.append(44) }
            out.append(34)
            for byte in field.utf8 { if byte == 34 { out.append(34) }; out.append(byte) }
            out.append(34)
        }
        out += [13, 10]
    }
    return out
}


func fuzzAccountingCSV(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let rows = try? AccountingCSVReader.parseRows(bytes) else { return 0 }
    if let header = rows.first {
        for row in rows.dropFirst() {
            _ = try? AccountingCSVRow(header: header.fields, fields: row.fields, line: row.line).record()
        }
    }
    // Invalid UTF-8 is replaced on the way in, so compare what was decoded.
    guard let again = try? AccountingCSVReader.parseRows(quoted(rows)) else {
        preconditionFailure("quoted rows do not parse")
    }
    precondition(again.map(\.fields) == rows.map(\.fields), "quoting round trip changed the rows")
    return 0
}
