/// Fixed-bucket latency counts (the daemon renders them as a Prometheus
/// histogram): observing is a bucket search and two adds, no allocation.
public struct SpoolLatency: Sendable, Equatable {
    /// Upper bounds in seconds: a local SSD syncs in a fraction of a
    /// millisecond, a busy or networked disk in hundreds of them.
    public static let bounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1, 2.5]
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    public private(set) var counts = [UInt64](repeating: 0, count: SpoolLatency.bounds.count + 1)
    public private(set) var sumSeconds: Double = 0

    public init() {}

    public var count: UInt64 { counts.reduce(0, &+) }

    public mutating func observe(nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        var i = 0
        while i < Self.bounds.count && seconds > Self.bounds[i] { i += 1 }
        counts[i] &+= 1
        sumSeconds += seconds
    }
}
