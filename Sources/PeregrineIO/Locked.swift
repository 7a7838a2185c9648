import Synchronization

/// Peregrine's one lock: a value shared by threads under a mutex, or, as
/// `Locked<Void>`, a mutex guarding state its owner keeps in its own fields
/// (start-up bookkeeping, the sink's shared policy, the daemon's config).
/// Never held across a loop hand-off or a syscall that may block for long.
package final class Locked<Value>: @unchecked Sendable {
    private let mutex = Mutex<Void>(())
    private var value: Value
    package init(_ value: Value) { self.value = value }
    package func withLock<R>(_ body: (inout Value) -> R) -> R {
        mutex.withLock { _ in body(&value) }
    }
}

extension Locked where Value == Void {
    /// A mutex for state kept outside it.
    package convenience init() { self.init(()) }

    /// Runs `body` with the mutex held.
    package func withLock<R>(_ body: () -> R) -> R {
        withLock { (_: inout Void) in body() }
    }
}
