import PeregrineConfig

/// The top-level runtime directives: the log file (`log-file`, `log-rotate`)
/// and the identity the daemon runs as (`run-as-user`, `run-as-group`, `run-as-root`).
public struct RuntimeSettings: Hashable, Sendable {
    /// `log-file PATH`; nil: daemon lines go to stderr only.
    public var logFilePath: String?
    /// `log-rotate`'s values (kept apart from the path: the two may come in either order).
    public var logRotation = DaemonLogFile.Options(path: "")
    /// `run-as-user NAME|UID`: after binding the listeners and opening the
    /// files as root, the daemon switches to this user (and drops root for good).
    public var runAsUser: String?
    /// `run-as-group NAME|GID`: the group it switches to (default: the user's primary group).
    public var runAsGroup: String?
    /// `run-as-root yes|no`; nil: not said. `yes` keeps root (no `run-as-user` allowed with it).
    public var runAsRoot: Bool?

    public init() {}

    /// The log file options in force, or nil without `log-file`.
    public var logFile: DaemonLogFile.Options? {
        guard let path = logFilePath else { return nil }
        var o = logRotation
        o.path = path
        return o
    }

    static let directiveNames = ["log-file", "log-rotate", "log-file-world-readable", "run-as-user", "run-as-group", "run-as-root"]

    /// Applies one top-level directive if it is one of these; false if it is not.
    mutating func apply(_ node: ConfigNode) throws(ConfigError) -> Bool {
        switch node.name {
        case "log-file":
            let path = try node.singleArgument()
            guard path.hasPrefix("/") else {
                throw node.error("log-file: '\(path)' is not an absolute path (the daemon's working directory is not yours)")
            }
            logFilePath = path
        case "log-rotate":
            let readable = logRotation.worldReadable
            logRotation = try Self.parseRotation(node)
            logRotation.worldReadable = readable
        case "log-file-world-readable":
            logRotation.worldReadable = try node.value(ConfigValue.bool)
        case "run-as-user":
            runAsUser = try node.singleArgument()
        case "run-as-group":
            runAsGroup = try node.singleArgument()
        case "run-as-root":
            runAsRoot = try node.value(ConfigValue.bool)
        default:
            return false
        }
        return true
    }

    /// Checks that need the whole file: `log-rotate` without `log-file`,
    /// `run-as-root yes` with `run-as-user`.
    func check(nodes: [ConfigNode]) throws(ConfigError) {
        let rotate = nodes.first { !$0.isBlock && $0.name == "log-rotate" }
        if let rotate, logFilePath == nil {
            throw rotate.error("log-rotate needs a log-file to rotate")
        }
        if runAsRoot == true, runAsUser != nil || runAsGroup != nil,
           let node = nodes.first(where: { !$0.isBlock && ($0.name == "run-as-user" || $0.name == "run-as-group") }) {
            throw node.error("\(node.name) contradicts run-as-root yes (the daemon would either keep root or drop it)")
        }
        if runAsGroup != nil, runAsUser == nil,
           let node = nodes.first(where: { !$0.isBlock && $0.name == "run-as-group" }) {
            throw node.error("run-as-group needs run-as-user (switching the group alone would keep root)")
        }
    }

    /// `log-rotate N` keeps N rotated files (PowerMTA's form); the file is
    /// rotated daily at midnight UTC. `log-rotate keep=N max-size=SIZE
    /// interval=DURATION|never` sets each part (in any order, any subset).
    static func parseRotation(_ node: ConfigNode) throws(ConfigError) -> DaemonLogFile.Options {
        var o = DaemonLogFile.Options(path: "")
        let usage = "N, or keep=N max-size=SIZE interval=DURATION|never"
        let items = try node.arguments(count: 1...3, usage: usage)
        for item in items {
            if item.allSatisfy({ $0.isASCII && $0.isNumber }) {
                o.keep = try node.parse(item) { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 0...100_000) }
                continue
            }
            guard let eq = item.firstIndex(of: "=") else {
                throw node.error("log-rotate: '\(item)' is not understood (expected \(usage))")
            }
            let key = item[..<eq].lowercased(), value = String(item[item.index(after: eq)...])
            switch key {
            case "keep":
                o.keep = try node.parse(value) { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 0...100_000) }
            case "max-size":
                let size = try node.parse(value, ConfigValue.size)
                guard size >= 4096 else { throw node.error("log-rotate: max-size \(value) is too small (at least 4k)") }
                o.maxSize = Int64(size)
            case "interval":
                if let d = try node.parse(value, ConfigValue.durationOrNever) {
                    guard d >= .seconds(1) else { throw node.error("log-rotate: interval must be at least 1s") }
                    o.moveInterval = d.components.seconds
                } else {
                    o.moveInterval = nil
                }
            default:
                throw node.error("log-rotate: unknown option '\(key)' (expected \(usage))")
            }
        }
        return o
    }
}
