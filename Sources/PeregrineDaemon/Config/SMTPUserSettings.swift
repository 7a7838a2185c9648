import PeregrineConfig
import PeregrineTLS

/// `<smtp-user NAME>`: a login for SMTP AUTH on injection.
///
///     <smtp-user alice>
///         password-hash $pbkdf2-sha256$600000$SALT$HASH   # from 'peregrine passwd'
///         source {submission}                             # rights after login
///     </smtp-user>
///
/// `password TEXT` is accepted too (PowerMTA's form); only its SHA-256 is
/// kept in memory. Without `source`, a logged-in client keeps the rights of
/// its address's `<source>` and may relay (what a login has always meant);
/// with it, exactly the named `<source {NAME}>` block's rights apply.
public struct SMTPUserSettings: Hashable, Sendable {
    public enum Secret: Hashable, Sendable {
        /// `password TEXT`: the SHA-256 of the text.
        case plainDigest([UInt8])
        /// `password-hash $pbkdf2-sha256$…`.
        case hashed(PasswordHash)
    }

    /// The login name, compared exactly (case matters, as in the password).
    public var name: String
    public var secret: Secret
    /// `source {NAME}`: a named `<source {NAME}>` block, lower-cased.
    public var source: String?
    public var location: ConfigLocation?

    public init(name: String, secret: Secret, source: String? = nil) {
        self.name = name; self.secret = secret; self.source = source
    }

    /// Directives allowed in `<smtp-user>`.
    static let directiveNames = ["password", "password-hash", "source"]

    /// Parses an `<smtp-user NAME>` block; throws the first error.
    public init(block: ConfigNode) throws(ConfigError) {
        var diagnostics = ConfigDiagnostics()
        let user = try Self.parse(block: block, diagnostics: &diagnostics)
        try diagnostics.throwFirstError()
        guard let user else { throw block.error("\(block.displayName) has no usable password") }
        self = user
    }

    /// Parses an `<smtp-user NAME>` block, recording each directive's error;
    /// throws when the block has no name or no password line, and is nil
    /// when its password line was wrong (that line's error is recorded).
    public static func parse(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) -> SMTPUserSettings? {
        let name = try block.arguments(count: 1...1, usage: "one user name, as in <smtp-user alice>")[0]
        var secret: Secret?
        var source: String?
        var seen = ConfigDirectiveLines()
        for node in block.directivesOnly(diagnostics: &diagnostics) {
            guard seen.firstOccurrence(node, diagnostics: &diagnostics) else { continue }
            do throws(ConfigError) {
                switch node.name {
                case "password", "password-hash":
                    if secret != nil {
                        throw node.error("\(block.displayName) has both password and password-hash; keep one")
                    }
                    secret = try Self.secret(node)
                case "source":
                    let text = try node.singleArgument()
                    guard let named = SourceSettings.braceName(text) else {
                        throw node.error("source: expected a named source such as {submission}, got '\(text)'")
                    }
                    source = named
                default:
                    throw node.error("unknown directive '\(node.name)' in \(block.displayName)")
                }
            } catch {
                diagnostics.record(error)
            }
        }
        guard let secret else {
            // A password line that was wrong has its own error already.
            if !seen.contains("password") && !seen.contains("password-hash") {
                throw block.error("\(block.displayName) needs password-hash (see 'peregrine passwd') or password")
            }
            return nil
        }
        var user = SMTPUserSettings(name: name, secret: secret, source: source)
        user.location = block.location
        return user
    }

    private static func secret(_ node: ConfigNode) throws(ConfigError) -> Secret {
        let text = try node.singleArgument()
        if node.name == "password" {
            guard !text.isEmpty else { throw node.error("password: an empty password is not allowed") }
            return .plainDigest(sha256(Array(text.utf8)))
        }
        return .hashed(try node.parse(text) { (t: String) throws(ConfigValueError) -> PasswordHash in
            do { return try PasswordHash(parsing: t) } catch { throw ConfigValueError("\(error)") }
        })
    }
}

extension SMTPUserSettings {
    /// The `password-hash` value for `password` (fresh salt), as `peregrine passwd` prints it;
    /// nil when the iteration count is out of range or the system's randomness failed.
    public static func hashDirectiveValue(password: [UInt8], iterations: Int = PasswordHash.defaultIterations) -> String? {
        guard (PasswordHash.minimumIterations...PasswordHash.maximumIterations).contains(iterations) else { return nil }
        return PasswordHash.make(password: password, iterations: iterations)?.encoded
    }

    public static var defaultHashIterations: Int { PasswordHash.defaultIterations }
    public static var hashIterationRange: ClosedRange<Int> { PasswordHash.minimumIterations...PasswordHash.maximumIterations }
}
