import Foundation
import PeregrineConfig

/// What `check-config` and a refused `run` print: every error, then every
/// warning, one `file:line: directive: message` line each, or the same as
/// JSON for tools.
public struct ConfigReport: Sendable {
    public var file: String
    public var errors: [ConfigError]
    public var warnings: [ConfigError]

    /// Loads `path` and collects everything wrong with it, including what only
    /// shows when the files it names are read (the TLS certificate and key).
    /// `strict`: warnings count as errors.
    public static func check(path: String, strict: Bool) -> (report: ConfigReport, config: PeregrineConfig) {
        var diagnostics = ConfigDiagnostics()
        let config = PeregrineConfig.load(path: path, diagnostics: &diagnostics)
        if let tls = config.serverTLS {
            do { _ = try tls.makeContext() } catch { diagnostics.record(error) }
        }
        var warnings = diagnostics.sortedWarnings
        if !diagnostics.hasErrors {
            warnings += config.defaultWarnings.map { ConfigError(ConfigLocation(file: path, line: 0), $0) }
        }
        var report = ConfigReport(file: path, errors: diagnostics.sortedErrors, warnings: warnings)
        if strict {
            report.errors += report.warnings
            report.warnings = []
        }
        return (report, config)
    }

    public init(file: String, errors: [ConfigError], warnings: [ConfigError]) {
        self.file = file
        self.errors = errors
        self.warnings = warnings
    }

    public var hasErrors: Bool { !errors.isEmpty }

    /// Errors first, then warnings (`file:line: warning: directive: message`).
    public var lines: [String] {
        errors.map(\.description) + warnings.map(Self.warningLine)
    }

    /// `N errors, M warnings`, for the last line.
    public var summary: String {
        func count(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        return "\(file): \(count(errors.count, "error")), \(count(warnings.count, "warning"))"
    }

    static func warningLine(_ warning: ConfigError) -> String {
        ConfigError(warning.location, "warning: " + warning.messageNamingDirective).description
    }

    /// `{"file":…,"ok":…,"errors":[{"file","line","directive","message"}…],"warnings":[…]}`.
    public var json: String {
        func entry(_ e: ConfigError) -> [String: Any] {
            var out: [String: Any] = ["file": e.location.file, "line": e.location.line, "message": e.message]
            out["directive"] = e.directive ?? NSNull()
            return out
        }
        let object: [String: Any] = ["file": file, "ok": !hasErrors,
                                     "errors": errors.map(entry), "warnings": warnings.map(entry)]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
              let text = String(data: data, encoding: .utf8) else { return "{}" }
        return text
    }
}
