/// Builds the Prometheus text exposition format (version 0.0.4) for `GET /metrics`.
///
///     var p = PrometheusText()
///     p.counter("peregrine_delivered_total", help: "Recipients delivered", value: 42,
///               labels: [("queue", "gmail.com/vmta1")])
///     let body = p.text
///
/// `# HELP` and `# TYPE` are written once per metric family, before its first
/// sample, and every sample of a family is written with the others of that
/// family, whatever order they were added in: a scraper's parser splits a
/// family whose samples are interleaved with another's (issue 17: per-queue
/// gauges added queue by queue came out as scattered families).
/// Metric and label names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*`; label
/// values and help texts are escaped (`\\`, `\"`, newline).
public struct PrometheusText: Sendable {
    public enum MetricType: String, Sendable {
        case counter, gauge, histogram, untyped
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// One family: its header lines and its samples, in the order the family first appeared.
    private struct Family: Sendable {
        var header: [UInt8]
        var samples: [UInt8] = []
    }

    private var families: [Family] = []
    private var index: [String: Int] = [:]

    public init() {}

    public var utf8: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(families.reduce(0) { $0 + $1.header.count + $1.samples.count })
        for f in families { out += f.header; out += f.samples }
        return out
    }

    public var text: String { String(decoding: utf8, as: UTF8.self) }

    /// The body as an HTTP response with the right content type.
    public var response: HTTPResponse {
        HTTPResponse(status: 200, headers: [("Content-Type", PrometheusText.contentType)], body: utf8)
    }

    public mutating func counter(_ name: String, help: String? = nil, value: Double,
                                 labels: [(String, String)] = []) {
        sample(name, type: .counter, help: help, value: value, labels: labels)
    }

    public mutating func counter(_ name: String, help: String? = nil, value: some BinaryInteger,
                                 labels: [(String, String)] = []) {
        sample(name, type: .counter, help: help, integer: Int64(clamping: value), labels: labels)
    }

    public mutating func gauge(_ name: String, help: String? = nil, value: Double,
                               labels: [(String, String)] = []) {
        sample(name, type: .gauge, help: help, value: value, labels: labels)
    }

    public mutating func gauge(_ name: String, help: String? = nil, value: some BinaryInteger,
                               labels: [(String, String)] = []) {
        sample(name, type: .gauge, help: help, integer: Int64(clamping: value), labels: labels)
    }

    public mutating func sample(_ name: String, type: MetricType, help: String?, value: Double,
                                labels: [(String, String)]) {
        let f = declare(name, type: type, help: help)
        appendSeries(f, PrometheusText.sanitizeName(name, allowColon: true), labels)
        families[f].samples.append(contentsOf: PrometheusText.format(value).utf8)
        families[f].samples.append(10)
    }

    public mutating func sample(_ name: String, type: MetricType, help: String?, integer: Int64,
                                labels: [(String, String)]) {
        let f = declare(name, type: type, help: help)
        appendSeries(f, PrometheusText.sanitizeName(name, allowColon: true), labels)
        families[f].samples.append(contentsOf: String(integer).utf8)
        families[f].samples.append(10)
    }

    /// A histogram: `name_bucket{le=...}` (cumulative, ending with `+Inf`), `name_sum`, `name_count`.
    /// `buckets` are the upper bounds with the count of observations up to each (not cumulative).
    public mutating func histogram(_ name: String, help: String? = nil, buckets: [(upperBound: Double, count: UInt64)],
                                   overflow: UInt64, sum: Double, labels: [(String, String)] = []) {
        let f = declare(name, type: .histogram, help: help)
        let base = PrometheusText.sanitizeName(name, allowColon: true)
        var cumulative: UInt64 = 0
        for b in buckets {
            cumulative &+= b.count
            appendSeries(f, base + "_bucket", labels + [("le", PrometheusText.format(b.upperBound))])
            families[f].samples.append(contentsOf: String(cumulative).utf8)
            families[f].samples.append(10)
        }
        cumulative &+= overflow
        appendSeries(f, base + "_bucket", labels + [("le", "+Inf")])
        families[f].samples.append(contentsOf: "\(cumulative)\n".utf8)
        appendSeries(f, base + "_sum", labels)
        families[f].samples.append(contentsOf: "\(PrometheusText.format(sum))\n".utf8)
        appendSeries(f, base + "_count", labels)
        families[f].samples.append(contentsOf: "\(cumulative)\n".utf8)
    }

    private mutating func declare(_ rawName: String, type: MetricType, help: String?) -> Int {
        let name = PrometheusText.sanitizeName(rawName, allowColon: true)
        if let f = index[name] { return f }
        var header: [UInt8] = []
        if let help {
            header.append(contentsOf: "# HELP \(name) ".utf8)
            PrometheusText.escape(help, into: &header, quotes: false)
            header.append(10)
        }
        header.append(contentsOf: "# TYPE \(name) \(type.rawValue)\n".utf8)
        families.append(Family(header: header))
        index[name] = families.count - 1
        return families.count - 1
    }

    private mutating func appendSeries(_ family: Int, _ name: String, _ labels: [(String, String)]) {
        var bytes: [UInt8] = []
        bytes.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            bytes.append(UInt8(ascii: "{"))
            for (i, (k, v)) in labels.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes.append(contentsOf: PrometheusText.sanitizeName(k, allowColon: false).utf8)
                bytes.append(contentsOf: "=\"".utf8)
                PrometheusText.escape(v, into: &bytes, quotes: true)
                bytes.append(UInt8(ascii: "\""))
            }
            bytes.append(UInt8(ascii: "}"))
        }
        bytes.append(32)
        families[family].samples.append(contentsOf: bytes)
    }

    static func escape(_ s: String, into out: inout [UInt8], quotes: Bool) {
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case 10: out.append(contentsOf: "\\n".utf8)
            case UInt8(ascii: "\"") where quotes: out.append(contentsOf: "\\\"".utf8)
            default: out.append(b)
            }
        }
    }

    static func sanitizeName(_ s: String, allowColon: Bool) -> String {
        var out: [UInt8] = []
        for (i, b) in s.utf8.enumerated() {
            let ok: Bool
            switch b {
            case 65...90, 97...122, UInt8(ascii: "_"): ok = true
            case 48...57: ok = i > 0
            case UInt8(ascii: ":"): ok = allowColon
            default: ok = false
            }
            out.append(ok ? b : UInt8(ascii: "_"))
        }
        if out.isEmpty { out.append(UInt8(ascii: "_")) }
        return String(decoding: out, as: UTF8.self)
    }

    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
