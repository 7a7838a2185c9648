/// Something that can be written as one accounting CSV line: `AccountingRecord`,
/// or a view of a delivery outcome that encodes its fields straight from the
/// message and reply (`AccountingOutcomeRecord`) without building a record of Strings.
public protocol AccountingRecordEncodable {
    var accountingType: AccountingRecordType { get }
    /// Appends every column in `AccountingRecord.fieldNames` order, then CRLF.
    func encodeCSV(into line: inout AccountingLineEncoder)
}
