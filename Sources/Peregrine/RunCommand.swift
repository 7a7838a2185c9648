import Foundation
import PeregrineIO
import PeregrineDaemon

/// `peregrine run --config FILE [--backend B] [--threads N]`: the daemon.
/// The backend and thread count default to the config (`io-backend`,
/// `threads`), then to io_uring (falling back to epoll when io_uring cannot
/// start) and one loop per core.
func runDaemon(arguments: [String]) -> Int32 {
    // First, before any thread exists: every thread inherits the mask, and the daemon's signal thread takes them.
    ProcessSignals.block(DaemonSignals.handled)
    var configPath: String?
    var backendText: String?
    var threads: Int?
    var i = 0
    while i < arguments.count {
        let a = arguments[i]
        func value() -> String? { i + 1 < arguments.count ? arguments[i + 1] : nil }
        switch a {
        case "--config", "-c":
            guard let v = value() else { return usageError("--config needs a file") }
            configPath = v; i += 2
        case "--backend":
            guard let v = value() else { return usageError("--backend needs io_uring, epoll or dispatch") }
            backendText = v; i += 2
        case "--threads":
            guard let v = value(), let n = Int(v), n >= 1, n <= 256 else { return usageError("--threads needs a number 1-256") }
            threads = n; i += 2
        default:
            return usageError("unknown option '\(a)'")
        }
    }
    guard let configPath else { return usageError("--config FILE is required") }
    // The same list check-config prints: every error, not just the first.
    let (report, config) = ConfigReport.check(path: configPath, strict: false)
    if report.hasErrors {
        for line in report.lines { fputs("\(line)\n", stderr) }
        fputs("peregrine: not starting: \(report.summary)\n", stderr)
        return 1
    }
    var kind = config.ioBackend ?? .ioUring
    var explicit = config.ioBackend != nil
    if let backendText {
        switch BackendKind.parse(backendText) {
        case .success(let k): kind = k; explicit = true
        case .failure(let e):
            fputs("peregrine: \(e)\n", stderr)
            return 2
        }
    }
    let n = threads ?? config.threads ?? 1
    func start<L: EventLoop>(_ type: L.Type) -> Int32 {
        let daemon: Daemon<L>
        do { daemon = try Daemon<L>(config: config, options: .init(configPath: configPath, threads: n)) } catch {
            fputs("peregrine: \(error)\n", stderr)
            return 1
        }
        return daemon.run()
    }
    if kind == .ioUring && !explicit {
        // Default backend: prefer io_uring, but a kernel without it still runs the MTA.
        do { try kind.probe() } catch {
            fputs("peregrine: io_uring unavailable (\(error)); using epoll\n", stderr)
            kind = .epoll
        }
    }
    return start(kind.loopType)
}

func runCtl(arguments: [String]) -> Int32 { CtlCommand.run(arguments) }

private func usageError(_ message: String) -> Int32 {
    fputs("peregrine: \(message)\n", stderr)
    return 2
}
