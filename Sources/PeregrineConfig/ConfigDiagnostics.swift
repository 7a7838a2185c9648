/// Every error and warning found while loading a config, so one run of
/// `check-config` reports them all: a parser records a directive's error and
/// goes on with the next directive instead of stopping at the first.
///
/// Parsers take `diagnostics: inout ConfigDiagnostics`; the throwing
/// entry points (`PeregrineConfig.parse`, `BlockConfig.parse`) wrap them and
/// throw the first error, for callers that only need to know "does it load".
public struct ConfigDiagnostics: Hashable, Sendable {
    /// In the order found; `sortedErrors` puts them in file order.
    public private(set) var errors: [ConfigError] = []
    public private(set) var warnings: [ConfigError] = []

    public init() {}

    public var hasErrors: Bool { !errors.isEmpty }

    public mutating func record(_ error: ConfigError) {
        // A cascade can find the same fault twice (a block that failed, then a reference to it).
        if !errors.contains(error) { errors.append(error) }
    }

    /// A warning at `node`'s line: the config loads, but the operator should know.
    public mutating func warn(_ node: ConfigNode, _ message: String) {
        warn(node.error(message))
    }

    public mutating func warn(_ warning: ConfigError) {
        if !warnings.contains(warning) { warnings.append(warning) }
    }

    public mutating func merge(_ other: ConfigDiagnostics) {
        for e in other.errors { record(e) }
        for w in other.warnings { warn(w) }
    }

    /// Errors by file (files in the order first seen) then line; found order otherwise.
    public var sortedErrors: [ConfigError] { Self.fileOrder(errors) }
    public var sortedWarnings: [ConfigError] { Self.fileOrder(warnings) }

    /// Throws the first error in file order, if any.
    public func throwFirstError() throws(ConfigError) {
        if let first = sortedErrors.first { throw first }
    }

    static func fileOrder(_ list: [ConfigError]) -> [ConfigError] {
        var fileRank: [String: Int] = [:]
        for e in list where fileRank[e.location.file] == nil { fileRank[e.location.file] = fileRank.count }
        return list.enumerated().sorted { a, b in
            let ka = (fileRank[a.element.location.file] ?? 0, a.element.location.line, a.offset)
            let kb = (fileRank[b.element.location.file] ?? 0, b.element.location.line, b.offset)
            return ka < kb
        }.map(\.element)
    }
}
