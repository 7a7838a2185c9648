#if canImport(Glibc)
import Glibc
#endif
import PeregrineTLS
import PeregrineConfig

/// `smtp-server-tls-certificate FILE` + `smtp-server-tls-key FILE`: the
/// certificate (leaf first, then intermediates, PEM) and private key the
/// injection listeners use for STARTTLS and for `smtp-listener … tls=yes`.
public struct ServerTLSSettings: Hashable, Sendable {
    public var certificateFile: String
    public var keyFile: String
    /// The `smtp-server-tls-certificate` line, for errors found when the files are loaded.
    public var location: ConfigLocation
    /// The `smtp-server-tls-key` line (a key that fails to load or match is reported there).
    public var keyLocation: ConfigLocation

    public init(certificateFile: String, keyFile: String, location: ConfigLocation, keyLocation: ConfigLocation? = nil) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.location = location
        self.keyLocation = keyLocation ?? location
    }

    /// Builds the server context (reads both files now, so a reload picks up
    /// renewed files); errors name the file and the line of the directive
    /// that named it.
    public func makeContext() throws(ConfigError) -> TLSContext {
        do {
            return try TLSContext.server(certificateFile: certificateFile, keyFile: keyFile)
        } catch {
            let blamesKey = error.file == keyFile && keyFile != certificateFile
            throw ConfigError(blamesKey ? keyLocation : location,
                              "\(blamesKey ? "smtp-server-tls-key" : "smtp-server-tls-certificate"): \(error)")
        }
    }
}

extension ConfigNode {
    /// The single argument, which must name a readable file.
    func readableFile() throws(ConfigError) -> String {
        let path = try singleArgument()
        guard access(path, R_OK) == 0 else {
            throw error("\(displayName): cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        return path
    }
}
