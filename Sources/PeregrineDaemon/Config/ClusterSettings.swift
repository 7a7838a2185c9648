import PeregrineIO
import PeregrineConfig

/// The cluster directives (issue #21, CLUSTER.md): `cluster-redis ADDR:PORT`
/// turns cluster mode on; `cluster-node-name` names this node (default: its
/// host name); `cluster-node-count` is how many nodes share the limits (the
/// fallback divides by it). Implemented so far: cluster-wide backoff.
public struct ClusterSettings: Hashable, Sendable {
    public var redis: SocketAddress?
    public var nodeName: String?
    public var nodeCount = 1

    public init() {}

    static let directiveNames = ["cluster-redis", "cluster-node-name", "cluster-node-count"]

    /// Applies one top-level directive if it is one of these; false if it is not.
    mutating func apply(_ node: ConfigNode) throws(ConfigError) -> Bool {
        switch node.name {
        case "cluster-redis":
            let text = try node.singleArgument()
            do {
                redis = try SocketAddress(parsing: text, defaultPort: 6379)
            } catch {
                throw node.error("cluster-redis: '\(text)' is not an IP address with an optional port (e.g. 10.0.0.5:6379)")
            }
        case "cluster-node-name":
            let name = try node.singleArgument()
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
                throw node.error("cluster-node-name: '\(name)' must be printable ASCII without spaces")
            }
            nodeName = name
        case "cluster-node-count":
            nodeCount = try node.value { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 1...1000) }
        default:
            return false
        }
        return true
    }
}
