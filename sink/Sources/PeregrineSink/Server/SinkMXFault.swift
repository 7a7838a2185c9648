import PeregrineConfig

/// `--mx-fault ISP:N=blackhole[@DURATION]`: one MX host of a provider accepts
/// TCP and never greets (from the start, or DURATION of profile time after it),
/// while the provider's other hosts work, so CI can script "Gmail's second MX
/// dies at minute 2". DNS keeps announcing the host, as a real outage does.
struct SinkMXFault: Equatable {
    var providerIndex: Int
    /// Index in the profile's `mx` (N - 1).
    var mx: Int
    /// Real seconds after the start (the time scale applies).
    var afterSeconds: Double

    struct Error: Swift.Error { var message: String }

    static func parse(_ text: String, profiles: [SinkISPProfile]) -> Result<SinkMXFault, Error> {
        guard let colon = text.firstIndex(of: ":"), let eq = text.firstIndex(of: "="), colon < eq else {
            return .failure(Error(message: "expected ISP:N=blackhole[@DURATION], e.g. gmail:2=blackhole@2m"))
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
        if let at = what.firstIndex(of: "@") {
            do {
                after = Double(try ConfigValue.duration(String(what[what.index(after: at)...])).nanoseconds) / 1e9
            } catch {
                return .failure(Error(message: "\(error)"))
            }
            what = what[..<at]
        }
        guard what == "blackhole" else {
            return .failure(Error(message: "'\(what)' is not a fault this sink models (blackhole)"))
        }
        return .success(SinkMXFault(providerIndex: index, mx: n - 1, afterSeconds: after))
    }
}
