/// The directives met so far in one block, with the line each was first set
/// on: every block refuses a directive set twice the same way ("NAME is
/// already set in this block at line N"), except the ones it lets repeat.
public struct ConfigDirectiveLines: Sendable {
    private var lines: [String: Int] = [:]
    private let repeatable: Set<String>

    /// `repeatable`: directives that may appear more than once in the block (each occurrence adds).
    public init(repeatable: Set<String> = []) { self.repeatable = repeatable }

    /// Notes `node`. False, with the error recorded, when its directive was
    /// set before in this block and may not repeat: the caller skips it.
    public mutating func firstOccurrence(_ node: ConfigNode, diagnostics: inout ConfigDiagnostics) -> Bool {
        if repeatable.contains(node.name) { return true }
        if let line = lines[node.name] {
            diagnostics.record(node.error("\(node.name) is already set in this block at line \(line)"))
            return false
        }
        lines[node.name] = node.location.line
        return true
    }

    /// Whether the block set `name` (a repeatable directive is never noted).
    public func contains(_ name: String) -> Bool { lines[name] != nil }
}
