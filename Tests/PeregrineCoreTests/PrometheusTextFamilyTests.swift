import PeregrineHTTP
import Testing

/// Samples added family by family interleaved (per queue: ready, delayed, ready, delayed …)
/// come out contiguous per family with HELP/TYPE once; histograms are cumulative
/// with +Inf, _sum and _count (issue 17: scrapers split interleaved families).
@Suite("Prometheus text families")
struct PrometheusTextFamilyTests {
    @Test func interleavedSamplesComeOutContiguousPerFamily() {
        var p = PrometheusText()
        for q in ["a", "b"] {
            p.gauge("peregrine_queue_ready", help: "Ready", value: 1, labels: [("queue", q)])
            p.gauge("peregrine_queue_delayed", help: "Delayed", value: 2, labels: [("queue", q)])
        }
        #expect(p.text == """
        # HELP peregrine_queue_ready Ready
        # TYPE peregrine_queue_ready gauge
        peregrine_queue_ready{queue="a"} 1
        peregrine_queue_ready{queue="b"} 1
        # HELP peregrine_queue_delayed Delayed
        # TYPE peregrine_queue_delayed gauge
        peregrine_queue_delayed{queue="a"} 2
        peregrine_queue_delayed{queue="b"} 2

        """)
    }

    @Test func histogramIsCumulativeWithInfSumAndCount() {
        var h = PrometheusHistogram(bounds: [0.1, 1])
        h.observe(seconds: 0.05)
        h.observe(seconds: 0.5)
        h.observe(seconds: 0.5)
        h.observe(seconds: 7)
        var p = PrometheusText()
        p.histogram("peregrine_delivery_latency_seconds", help: "Latency", h)
        #expect(p.text == """
        # HELP peregrine_delivery_latency_seconds Latency
        # TYPE peregrine_delivery_latency_seconds histogram
        peregrine_delivery_latency_seconds_bucket{le="0.1"} 1
        peregrine_delivery_latency_seconds_bucket{le="1"} 3
        peregrine_delivery_latency_seconds_bucket{le="+Inf"} 4
        peregrine_delivery_latency_seconds_sum 8.05
        peregrine_delivery_latency_seconds_count 4

        """)
    }
}
