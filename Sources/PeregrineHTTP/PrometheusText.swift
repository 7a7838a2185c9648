/// Builds the Prometheus text exposition format (version 0.0.4) for `GET /metrics`.
///
///     var p = PrometheusText()
///     p.counter("peregrine_delivered_total", help: "Recipients delivered", value: 42,
///               labels: [("queue", "gmail.com/vmta1")])
///     let body = p.text
///
/// `# HELP` and `# TYPE` are written the first time a metric name is used;
/// add all samples of one metric together (the format wants them contiguous).
/// Metric and label names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*`; label
/// values and help texts are escaped (`\\`, `\"`, newline).
public struct PrometheusText: Sendable {
    public enum MetricType: String, Sendable {
        case counter, gauge, untyped
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private var bytes: [UInt8] = []
    private var declared: Set<String> = []

    public init() {}

    public var text: String { String(decoding: bytes, as: UTF8.self) }
    public var utf8: [UInt8] { bytes }

    /// The body as an HTTP response with the right content type.
    public var response: HTTPResponse {
        HTTPResponse(status: 200, headers: [("Content-Type", PrometheusText.contentType)], body: bytes)
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
        let n = declare(name, type: type, help: help)
        appendSeries(n, labels)
        bytes.append(contentsOf: PrometheusText.format(value).utf8)
        bytes.append(10)
    }

    public mutating func sample(_ name: String, type: MetricType, help: String?, integer: Int64,
                                labels: [(String, String)]) {
        let n = declare(name, type: type, help: help)
        appendSeries(n, labels)
        bytes.append(contentsOf: String(integer).utf8)
        bytes.append(10)
    }

    private mutating func declare(_ rawName: String, type: MetricType, help: String?) -> String {
        let name = PrometheusText.sanitizeName(rawName, allowColon: true)
        if declared.insert(name).inserted {
            if let help {
                bytes.append(contentsOf: "# HELP \(name) ".utf8)
                PrometheusText.escape(help, into: &bytes, quotes: false)
                bytes.append(10)
            }
            bytes.append(contentsOf: "# TYPE \(name) \(type.rawValue)\n".utf8)
        }
        return name
    }

    private mutating func appendSeries(_ name: String, _ labels: [(String, String)]) {
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
