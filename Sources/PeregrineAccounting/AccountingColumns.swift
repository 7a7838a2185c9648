/// The columns of one accounting file under `record-fields`: `type` first,
/// then the union of the fields chosen for each record type the file takes,
/// in the order they were named (PowerMTA's layout: one header for the file;
/// a record leaves the columns of the other types' fields empty).
///
/// Records are encoded with every field (`AccountingRecord.fieldNames`
/// order) and then projected onto these columns; a file without
/// `record-fields` skips the projection.
public struct AccountingColumns: Hashable, Sendable {
    /// The header's names, `type` first.
    public let names: [String]
    /// Per record type (`AccountingRecordType.allCases` order): for each column
    /// after `type`, the index of its field in `AccountingRecord.fieldNames`, or -1 for empty.
    let projection: [[Int]]
    /// No `record-fields`: the full layout, no projection.
    public let isFull: Bool

    /// PowerMTA fields Peregrine does not fill: naming one keeps an empty column (and check-config warns).
    public static let unfilledFields: Set<String> = ["timeImprinted"]

    public init(records: Set<AccountingRecordType>?, recordFields: [AccountingRecordType: [String]]) {
        let all = AccountingRecord.fieldNames
        guard !recordFields.isEmpty else {
            names = all
            projection = []
            isFull = true
            return
        }
        let types = AccountingRecordType.allCases.filter { records?.contains($0) ?? true }
        var columns = ["type"]
        for t in types {
            for f in recordFields[t] ?? Array(all.dropFirst()) where !columns.contains(f) { columns.append(f) }
        }
        names = columns
        projection = AccountingRecordType.allCases.map { t in
            let chosen = Set(recordFields[t] ?? Array(all.dropFirst()))
            return columns.dropFirst().map { name in chosen.contains(name) ? (all.firstIndex(of: name) ?? -1) : -1 }
        }
        isFull = false
    }

    /// The header line, with CRLF.
    public var header: [UInt8] {
        var out: [UInt8] = []
        for (i, name) in names.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            AccountingCSV.appendField(name, to: &out)
        }
        out.append(13); out.append(10)
        return out
    }

    /// Appends `line` (a full-layout CSV line ending in CRLF, of record type
    /// `type`) to `out` with only this file's columns. `starts` is scratch.
    func project(_ line: [UInt8], type: AccountingRecordType, into out: inout [UInt8], starts: inout [Int]) {
        guard let typeIndex = AccountingRecordType.allCases.firstIndex(of: type) else { return }
        // Field boundaries, quotes respected (a quoted field may hold commas and line breaks).
        starts.removeAll(keepingCapacity: true)
        starts.append(0)
        var inQuotes = false
        var end = line.count
        if end >= 2 && line[end - 2] == 13 && line[end - 1] == 10 { end -= 2 }
        var i = 0
        while i < end {
            let b = line[i]
            if b == 34 { inQuotes.toggle() } else if b == 44 && !inQuotes { starts.append(i + 1) }
            i += 1
        }
        starts.append(end + 1)
        func field(_ n: Int) -> ArraySlice<UInt8> {
            guard n >= 0, n + 1 < starts.count else { return [] }
            return line[starts[n]..<(starts[n + 1] - 1)]
        }
        out.append(contentsOf: field(0))
        for source in projection[typeIndex] {
            out.append(UInt8(ascii: ","))
            if source >= 0 { out.append(contentsOf: field(source)) }
        }
        out.append(13); out.append(10)
    }
}
