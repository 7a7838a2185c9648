/// Fixed-bucket histogram for `/metrics`: observing is a bucket search and two
/// adds, no allocation (it is called once per delivered recipient). Each loop
/// keeps its own; the management API adds them up (`merge`) for a scrape.
public struct PrometheusHistogram: Sendable {
    /// Upper bounds in seconds (Prometheus base unit), ascending.
    public let bounds: [Double]
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    public private(set) var counts: [UInt64]
    public private(set) var sum: Double = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    /// Injection to delivery: milliseconds on a quiet relay, hours for a queue in backoff.
    public static let deliveryLatencyBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                                        300, 900, 3600, 14400, 86400]

    public mutating func observe(seconds: Double) {
        var i = 0
        while i < bounds.count && seconds > bounds[i] { i += 1 }
        counts[i] &+= 1
        sum += seconds
    }

    public mutating func merge(_ other: PrometheusHistogram) {
        guard other.bounds == bounds else { return }
        for i in counts.indices { counts[i] &+= other.counts[i] }
        sum += other.sum
    }
}

extension PrometheusText {
    public mutating func histogram(_ name: String, help: String? = nil, _ h: PrometheusHistogram,
                                   labels: [(String, String)] = []) {
        histogram(name, help: help, buckets: zip(h.bounds, h.counts).map { (upperBound: $0, count: $1) },
                  overflow: h.counts.last ?? 0, sum: h.sum, labels: labels)
    }
}
