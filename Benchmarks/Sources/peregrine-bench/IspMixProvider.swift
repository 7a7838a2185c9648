/// One receiving provider of the isp-mix scenario: the daemon's domain macro,
/// loadgen's share of its domains (loadgen's default consumer mix), and the
/// hand-addressed domain for unknown/greylisted recipients.
struct IspMixProvider {
    let name: String
    /// The daemon's `domain-macro` (every domain the sink's profile serves for it).
    let domains: [String]
    /// Recipient domains and weights loadgen draws from.
    let mix: [(domain: String, weight: Int)]
    /// Domains the bench addresses unknown/greylisted recipients to.
    let special: [String]

    /// As the sink's shipped profiles and loadgen's default mix have them.
    static let all: [IspMixProvider] = [
        IspMixProvider(name: "gmail", domains: ["gmail.com", "googlemail.com"], mix: [("gmail.com", 40)], special: ["gmail.com"]),
        IspMixProvider(name: "yahoo", domains: ["yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com"],
                       mix: [("yahoo.com", 12), ("aol.com", 3)], special: ["yahoo.com"]),
        IspMixProvider(name: "outlook", domains: ["outlook.com", "hotmail.com", "live.com", "msn.com"],
                       mix: [("outlook.com", 8), ("hotmail.com", 8), ("live.com", 2), ("msn.com", 1)],
                       special: ["outlook.com", "hotmail.com"]),
        IspMixProvider(name: "icloud", domains: ["icloud.com", "me.com", "mac.com"], mix: [("icloud.com", 9)], special: ["icloud.com"]),
        IspMixProvider(name: "comcast", domains: ["comcast.net"], mix: [("comcast.net", 6)], special: ["comcast.net"]),
        IspMixProvider(name: "gmx", domains: ["gmx.net", "gmx.de", "gmx.com", "web.de"], mix: [("gmx.net", 5)], special: ["gmx.net"]),
        IspMixProvider(name: "orange", domains: ["orange.fr", "wanadoo.fr"], mix: [("orange.fr", 6)], special: ["orange.fr"]),
    ]

    /// `--isps all` or a comma list of names; an unknown name is a usage error.
    static func select(_ text: String) throws -> [IspMixProvider] {
        if text == "all" { return all }
        var chosen: [IspMixProvider] = []
        for name in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
            guard let p = all.first(where: { $0.name == name }) else {
                throw BenchUsageError("--isps: '\(name)' is not one of all, \(all.map(\.name).joined(separator: ", "))")
            }
            if !chosen.contains(where: { $0.name == p.name }) { chosen.append(p) }
        }
        guard !chosen.isEmpty else { throw BenchUsageError("--isps needs all or a comma list of providers") }
        return chosen
    }

    /// The provider a recipient domain belongs to ("other" for the sink's accept-all).
    static func name(ofDomain domain: String) -> String {
        all.first { $0.domains.contains(domain) }?.name ?? "other"
    }
}
