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
    /// `cluster-lease-ttl`: how long a node's connection leases outlive its
    /// last renewal (renewed every third of it), so how soon the others take
    /// over a dead node's share; also the pause after Redis comes back.
    public var leaseTTL: Duration = .seconds(10)

    public init() {}

    static let directiveNames = ["cluster-redis", "cluster-node-name", "cluster-node-count", "cluster-lease-ttl"]

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
        case "cluster-lease-ttl":
            let d = try node.value(ConfigValue.duration)
            // Below 1 s the renewals (every third) would be most of the Redis traffic;
            // above 10 min a dead node's connections would stay counted for too long.
            guard d >= .seconds(1) && d <= .seconds(600) else {
                throw node.error("cluster-lease-ttl: between 1s and 10m")
            }
            leaseTTL = d
        default:
            return false
        }
        return true
    }
}
