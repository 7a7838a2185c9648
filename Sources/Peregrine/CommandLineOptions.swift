#if canImport(Glibc)
import Glibc
#endif

/// Minimal `--name value` option parsing for the subcommands.
struct CommandLineOptions {
    var values: [String: String] = [:]
    var positional: [String] = []

    /// Nil (after printing the problem) on a dangling `--name` or an option not in `known`.
    init?(_ arguments: [String], known: Set<String>, command: String) {
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a.hasPrefix("--") {
                let key = String(a.dropFirst(2))
                guard known.contains(key) else {
                    fputs("peregrine \(command): unknown option '\(a)'\n", stderr)
                    return nil
                }
                guard i + 1 < arguments.count else {
                    fputs("peregrine \(command): option '\(a)' needs a value\n", stderr)
                    return nil
                }
                values[key] = arguments[i + 1]
                i += 2
            } else {
                positional.append(a)
                i += 1
            }
        }
    }

    /// An integer option, its default when absent; nil (after printing) when malformed.
    func int(_ key: String, default d: Int, command: String) -> Int? {
        guard let v = values[key] else { return d }
        guard let n = Int(v), n >= 0 else {
            fputs("peregrine \(command): --\(key) expects a non-negative integer, got '\(v)'\n", stderr)
            return nil
        }
        return n
    }
}
