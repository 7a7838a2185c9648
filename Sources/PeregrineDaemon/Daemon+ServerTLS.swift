import PeregrineTLS
import PeregrineConfig

/// The injection side's TLS context, built from a (re)loaded config.
extension Daemon {
    /// Reads the certificate and key the config names into a fresh context
    /// (nil: the config has no server TLS). Dropping TLS is refused while a
    /// `tls=yes` listener runs: it was bound at start-up and would otherwise
    /// answer its TLS clients in plain text.
    func makeServerTLSContext(for config: PeregrineConfig) throws(ConfigError) -> TLSContext? {
        guard let settings = config.serverTLS else {
            if let listener = implicitTLSListeners.first ?? httpInjectionTLSListener {
                throw ConfigError(ConfigLocation(file: options.configPath, line: 0),
                                  "smtp-server-tls-certificate and smtp-server-tls-key are gone, but listener \(listener) "
                                  + "runs with tls=yes until a restart; put them back or restart to turn TLS off")
            }
            return nil
        }
        return try settings.makeContext()
    }
}
