import Foundation
import PeregrineIO

/// `PEREGRINE_TEST_FAULT`: a fault the end-to-end tests inject into a real
/// `peregrine run`, to drive paths that no peer, file or config can reach
/// on purpose. Never set in production; when set, the daemon says so in its
/// log, and a value it does not know stops it at start-up (a fault that
/// silently did not happen would make its test pass for nothing).
///
/// - `loop-returns=N`: once the daemon runs, loop N's `run()` returns
///   without a shutdown, as a backend that gives up would (`loopReturned`).
enum DaemonTestFault: Equatable {
    case loopReturns(Int)

    static let variable = "PEREGRINE_TEST_FAULT"

    struct Unknown: Error, CustomStringConvertible { var description: String }

    /// The fault set in the environment; nil when none; an error saying so when the value is unknown.
    static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> Result<DaemonTestFault?, Unknown> {
        guard let text = environment[variable], !text.isEmpty else { return .success(nil) }
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        if parts.count == 2, parts[0] == "loop-returns", let n = Int(parts[1]), n >= 0 {
            return .success(.loopReturns(n))
        }
        return .failure(Unknown(description: "\(variable)=\(text): unknown test fault (known: loop-returns=N)"))
    }
}

extension Daemon {
    /// Injects `fault` into the running daemon (after the "running" line).
    func inject(_ fault: DaemonTestFault) {
        switch fault {
        case .loopReturns(let n):
            guard n < workers.count else {
                log("test fault \(DaemonTestFault.variable): loop-returns=\(n), but there are \(workers.count) loop(s); not injected")
                return
            }
            log("test fault \(DaemonTestFault.variable): loop \(n) returns from run() as a failing backend would")
            // stop() without the shutdown's bookkeeping: to the daemon, the loop returned by itself.
            workers[n].loop.stop()
        }
    }
}
