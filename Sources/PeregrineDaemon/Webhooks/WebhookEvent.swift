import PeregrineSpool

/// One delivery event as it is stored in the event log and POSTed: a JSON
/// object. The id is derived from what caused the event (message id,
/// recipient, type, and for deferrals the attempt time), so an event written
/// twice (after a crash, or re-emitted at start-up) carries the same id and a
/// receiver deduplicates on it.
///
/// JSON fields: `id`, `type` (`WebhookEventType.name`), `time` (Unix
/// seconds, wall clock), `recipient`, `sender`, and when known `message_id`,
/// `job_id`, `vmta`, `status` (enhanced code), `diagnostic`, `category`.
struct WebhookEvent {
    var type: WebhookEventType
    /// Wall clock, milliseconds since the epoch.
    var timeMillis: Int64
    var id: String
    var messageID: String?
    var recipient: String
    var sender: String
    var jobID: String? = nil
    var vmta: String? = nil
    var status: String? = nil
    var diagnostic: String? = nil
    var category: String? = nil

    /// Diagnostics longer than this are cut: a record stays small and bounded.
    static let maxDiagnosticBytes = 2048

    /// The id for an outcome of `recipient` of `message`; `attempt` (deferrals
    /// only) tells repeated deferrals of one recipient apart.
    static func id(message: MessageID, recipient: Int, type: WebhookEventType, attempt: Int64? = nil) -> String {
        var s = "\(message).\(recipient).\(type.name)"
        if let attempt { s += ".\(attempt)" }
        return s
    }

    var json: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        out.append(UInt8(ascii: "{"))
        func key(_ k: StaticString) {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            k.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: Array("\":".utf8))
        }
        func string(_ k: StaticString, _ v: String?, limit: Int = 4096) {
            guard let v else { return }
            key(k)
            Self.appendJSONString(v, limit: limit, to: &out)
        }
        string("id", id)
        string("type", type.name)
        key("time"); out.append(contentsOf: Array(String(timeMillis / 1000).utf8))
        string("message_id", messageID)
        string("recipient", recipient)
        string("sender", sender)
        string("job_id", jobID)
        string("vmta", vmta)
        string("status", status)
        string("diagnostic", diagnostic, limit: Self.maxDiagnosticBytes)
        string("category", category)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// RFC 8259 string: quotes, backslash and control characters escaped;
    /// invalid UTF-8 was already replaced by String. Cut at `limit` bytes (on a character boundary).
    static func appendJSONString(_ s: String, limit: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var used = 0
        for scalar in s.unicodeScalars {
            let width = UTF8.width(scalar)
            if used + width > limit { break }
            used += width
            switch scalar {
            case "\"": out.append(contentsOf: [0x5C, 0x22])
            case "\\": out.append(contentsOf: [0x5C, 0x5C])
            case "\n": out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case "\r": out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case "\t": out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16)
                    out.append(contentsOf: Array(("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8))
                } else {
                    out.append(contentsOf: Array(String(scalar).utf8))
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
