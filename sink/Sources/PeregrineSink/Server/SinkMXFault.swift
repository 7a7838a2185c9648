import PeregrineConfig

/// `--mx-fault ISP:N=KIND[@DURATION]`: one MX host of a provider fails in a
/// chosen way (from the start, or DURATION of profile time after it) while the
/// provider's other hosts work, so CI can script "Gmail's second MX dies at
/// minute 2". DNS keeps announcing the host, as a real outage does.
struct SinkMXFault: Equatable {
    enum Kind: Equatable {
        /// Accepts TCP and never greets (a wedged host, a stateful firewall).
        case blackhole
        /// Nothing listens any more: connection refused (the listener is closed).
        case down
        /// Accepts TCP, then resets the connection before any greeting.
        case reset
        /// Serves normally, but every reply (greeting included) comes this many seconds of profile time late.
        case slow(Double)

        var name: String {
            switch self {
            case .blackhole: return "blackhole"
            case .down: return "down"
            case .reset: return "reset"
            case .slow: return "slow"
            }
        }
    }

    var providerIndex: Int
    /// Index in the profile's `mx` (N - 1).
    var mx: Int
    var kind: Kind
    /// Seconds of profile time after the start (the time scale applies).
    var afterSeconds: Double

    struct Error: Swift.Error { var message: String }

    static let syntax = "ISP:N=blackhole|down|reset|slow=DELAY[@DURATION], e.g. gmail:2=blackhole@2m or yahoo:1=slow=30s"

    static func parse(_ text: String, profiles: [SinkISPProfile]) -> Result<SinkMXFault, Error> {
        guard let colon = text.firstIndex(of: ":"), let eq = text.firstIndex(of: "="), colon < eq else {
            return .failure(Error(message: "expected \(syntax)"))
        }
        let name = String(text[..<colon])
        guard let index = profiles.firstIndex(where: { $0.name == name }) else {
            return .failure(Error(message: "no profile named '\(name)' (have \(profiles.map(\.name).joined(separator: ", ")))"))
        }
        let count = profiles[index].mx.count
        guard let n = Int(text[text.index(after: colon)..<eq]), (1...count).contains(n) else {
            return .failure(Error(message: "MX host number must be 1 to \(count) (mx1.\(name).sink …)"))
        }
        var what = Substring(text[text.index(after: eq)...])
        var after = 0.0
        func seconds(_ s: Substring) throws -> Double { Double(try ConfigValue.duration(String(s)).nanoseconds) / 1e9 }
        do {
            if let at = what.firstIndex(of: "@") {
                after = try seconds(what[what.index(after: at)...])
                what = what[..<at]
            }
            let kind: Kind
            switch what {
            case "blackhole": kind = .blackhole
            case "down": kind = .down
            case "reset": kind = .reset
            default:
                guard what.hasPrefix("slow=") else {
                    return .failure(Error(message: "'\(what)' is not a fault this sink models (blackhole, down, reset, slow=DELAY)"))
                }
                let delay = try seconds(what.dropFirst(5))
                guard delay > 0 else { return .failure(Error(message: "slow needs a delay above 0, e.g. slow=30s")) }
                kind = .slow(delay)
            }
            return .success(SinkMXFault(providerIndex: index, mx: n - 1, kind: kind, afterSeconds: after))
        } catch {
            return .failure(Error(message: "\(error)"))
        }
    }
}

/// One MX host's fault as the provider keeps it: the kind, and from when (ns after the start).
struct SinkMXFaultState {
    var kind: SinkMXFault.Kind
    var afterNanos: UInt64
    /// `slow`: the extra delay of every reply, ns (scaled).
    var delayNanos: UInt64
}
