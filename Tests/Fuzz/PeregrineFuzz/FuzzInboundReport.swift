// Fuzz target: the bounce and feedback-loop processors' report reader
// (RFC 3464 DSNs, the common non-standard bounces, RFC 5965 ARF), on
// whatever a remote host mails back. Oracles besides "no crash": every
// record it gives names a recipient, and written to the accounting file and
// read back (the CSV writer and reader operators' tools rely on) it keeps
// every field the report filled — a hostile report cannot break a CSV line.
@_spi(Fuzzing) import PeregrineDaemon
import PeregrineAccounting

func fuzzInboundReport(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let records = InboundReportPath.records(Array(UnsafeBufferPointer(start: data, count: size)))
    guard !records.isEmpty else { return 0 }
    var file = AccountingRecord.csvHeader
    for r in records { r.appendCSV(to: &file) }
    let rows: [(line: Int, fields: [String])]
    do { rows = try AccountingCSVReader.parseRows(file) } catch { preconditionFailure("records do not parse as CSV: \(error)") }
    precondition(rows.count == records.count + 1, "\(records.count) records read back as \(rows.count - 1) rows")
    for (record, row) in zip(records, rows.dropFirst()) {
        precondition(record.type == .remoteBounce ? !record.rcpt.isEmpty : true, "an rb record without a recipient")
        let back: AccountingRecord
        do { back = try AccountingCSVRow(header: rows[0].fields, fields: row.fields, line: row.line).record() } catch {
            preconditionFailure("record does not read back: \(error)")
        }
        precondition(back.rcpt == record.rcpt && back.orig == record.orig && back.dsnDiag == record.dsnDiag
                     && back.dsnMta == record.dsnMta && back.jobId == record.jobId && back.envId == record.envId
                     && back.bounceCat == record.bounceCat && back.dsnStatus == record.dsnStatus,
                     "a record changed through the accounting CSV")
    }
    return 0
}
