/// The signing algorithm (`a=` tag).
public enum DKIMAlgorithm: Sendable, Equatable {
    case rsaSHA256
    case ed25519SHA256

    /// The `a=` tag value.
    public var tag: String {
        switch self {
        case .rsaSHA256: return "rsa-sha256"
        case .ed25519SHA256: return "ed25519-sha256"
        }
    }

    public init?(tag: String) {
        switch tag.lowercased() {
        case "rsa-sha256": self = .rsaSHA256
        case "ed25519-sha256": self = .ed25519SHA256
        default: return nil
        }
    }
}

/// One canonicalisation algorithm (RFC 6376 §3.4).
public enum DKIMCanonicalization: String, Sendable, Hashable {
    case simple
    case relaxed
}

/// The `c=` tag: header and body canonicalisation.
public struct DKIMCanonicalizations: Sendable, Hashable {
    public var header: DKIMCanonicalization
    public var body: DKIMCanonicalization

    public init(header: DKIMCanonicalization = .relaxed, body: DKIMCanonicalization = .relaxed) {
        self.header = header
        self.body = body
    }

    /// Parses `relaxed/simple`, `simple` (body simple too, as RFC 6376 §3.5 says) and the like.
    public init?(tag: String) {
        let parts = tag.lowercased().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2,
              let h = DKIMCanonicalization(rawValue: String(parts[0])) else { return nil }
        if parts.count == 2 {
            guard let b = DKIMCanonicalization(rawValue: String(parts[1])) else { return nil }
            self.init(header: h, body: b)
        } else {
            self.init(header: h, body: .simple)
        }
    }

    public var tag: String { "\(header.rawValue)/\(body.rawValue)" }
}

/// Why a key could not be loaded or a message could not be signed.
public struct DKIMError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
