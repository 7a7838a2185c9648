import Foundation

/// The inbound SMTP connection counts every loop shares: the total
/// (`max-smtp-in` at the top level) and per client address (`max-smtp-in` in
/// `<source>`). A lock per accept and per close, never per command: accepting
/// is not the hot path, and the counts must hold across loops (a client's
/// connections land on any loop with SO_REUSEPORT).
final class InboundConnectionLimits: @unchecked Sendable {
    enum Admission: Equatable {
        case admitted
        /// This client address has `perAddress` connections open already.
        case tooManyFromAddress
        /// The daemon has `total` inbound connections open already.
        case tooManyInTotal
    }

    private let lock = NSLock()
    private var total = 0
    private var byAddress: [String: Int] = [:]

    /// Counts a new connection from `ip` unless a limit is reached. Every
    /// `.admitted` must be paired with one `release(ip)`.
    func admit(ip: String, perAddress: Int, total limit: Int) -> Admission {
        lock.lock()
        defer { lock.unlock() }
        guard total < limit else { return .tooManyInTotal }
        let mine = byAddress[ip, default: 0]
        guard mine < perAddress else { return .tooManyFromAddress }
        byAddress[ip] = mine + 1
        total += 1
        return .admitted
    }

    func release(ip: String) {
        lock.lock()
        defer { lock.unlock() }
        total -= 1
        let left = byAddress[ip, default: 1] - 1
        byAddress[ip] = left > 0 ? left : nil
    }

    var openConnections: Int { lock.withLock { total } }
}
