import Foundation
import PeregrineIO
import PeregrineDaemon

/// `peregrine run --config FILE [--backend B] [--threads N]`: the daemon.
/// The backend and thread count default to the config (`io-backend`,
/// `threads`), then to io_uring (falling back to epoll when io_uring cannot
/// start) and one loop per core.
func runDaemon(arguments: [String]) -> Int32 {
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
    let config: PeregrineConfig
    do { config = try PeregrineConfig.load(path: configPath) } catch {
        fputs("\(error)\n", stderr)
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

/// `peregrine check-config FILE`: parses and validates without starting.
func runCheckConfig(arguments: [String]) -> Int32 {
    guard arguments.count == 1 else { return usageError("check-config takes one FILE") }
    do {
        let config = try PeregrineConfig.load(path: arguments[0])
        _ = try config.serverTLS?.makeContext() // the certificate and key must load and match
        for warning in config.warnings { fputs("\(arguments[0]): warning: \(warning)\n", stderr) }
        let listening = config.effectiveSMTPListeners.map(\.description).joined(separator: ", ")
        print("\(arguments[0]): OK (listening on \(listening), \(config.virtualMTAs.count) virtual-mta(s), "
              + "\(config.domains.count) domain block(s), \(config.patternLists.count) pattern list(s))")
        return 0
    } catch {
        fputs("\(error)\n", stderr)
        return 1
    }
}

func runCtl(arguments: [String]) -> Int32 { CtlCommand.run(arguments) }

private func usageError(_ message: String) -> Int32 {
    fputs("peregrine: \(message)\n", stderr)
    return 2
}
