/// Accounting failures as values, with the file and what went wrong.
public enum AccountingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A syscall on an accounting file failed.
    case io(path: String, operation: String, errno: Int32)
    /// The CSV text is not valid RFC 4180 (e.g. an unterminated quoted field).
    case malformedCSV(line: Int, reason: String)
    /// A row's field could not be interpreted.
    case malformedRecord(line: Int, field: String, value: String)
    /// The file does not start with a header line naming `type` first.
    case missingHeader(path: String)

    public var description: String {
        switch self {
        case .io(let path, let op, let e):
            return "\(path): \(op) failed: \(String(cString: strerror(e))) (errno \(e))"
        case .malformedCSV(let line, let reason):
            return "line \(line): malformed CSV: \(reason)"
        case .malformedRecord(let line, let field, let value):
            return "line \(line): field \(field): unexpected value '\(value)'"
        case .missingHeader(let path):
            return "\(path): no accounting header line"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
