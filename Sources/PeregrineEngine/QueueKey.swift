/// A delivery queue's name in PowerMTA's form, `domain/vmta` (e.g. `gmail.com/vmta1`).
/// Domains are compared lowercased; the VMTA name is kept as configured.
public struct QueueKey: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let domain: String
    public let vmta: String

    public init(domain: String, vmta: String) {
        self.domain = domain.lowercased()
        self.vmta = vmta
    }

    public var description: String { "\(domain)/\(vmta)" }

    public static func < (a: QueueKey, b: QueueKey) -> Bool { a.description < b.description }

    /// Matches a management pattern such as `gmail.com/*`, `*/vmta1` or `*/*`.
    public func matches(pattern: String) -> Bool {
        let parts = pattern.split(separator: "/", maxSplits: 1).map(String.init)
        let domainPattern = parts.first ?? "*"
        let vmtaPattern = parts.count > 1 ? parts[1] : "*"
        return Self.glob(domainPattern.lowercased(), domain) && Self.glob(vmtaPattern, vmta)
    }

    /// `*` matches any run of characters; everything else literally.
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8), t = Array(text.utf8)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == t[ti]) {
                pi += 1; ti += 1
            } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi; mark = ti; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
