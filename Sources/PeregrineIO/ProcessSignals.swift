#if canImport(Glibc)
import Glibc
#endif

/// The programs' one signal model (daemon and sink): the signals a program
/// acts on are blocked in every thread from its first line (`block`, before
/// any thread exists, so every thread inherits the mask), and taken
/// synchronously with `sigwait`, on a thread that does nothing else.
///
/// Why this rather than an ignored signal plus a Dispatch signal source (the
/// daemon's old way): a signal that comes while the program is still
/// starting (spool recovery can take a while) stays pending and is acted on
/// once it runs, instead of killing it with the default action before the
/// handlers exist; and the handler is ordinary code on a known thread, not
/// something that must be async-signal-safe. Children must not inherit the
/// mask: every program is started with `Posix.spawn`, which resets it (and
/// the dispositions) in the child.
public enum ProcessSignals {
    /// Blocks `signals` in the calling thread (and every thread it starts later).
    public static func block(_ signals: [Int32]) {
        var set = signalSet(signals)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits on the calling thread until one of `signals` (blocked) arrives; returns it.
    public static func wait(_ signals: [Int32]) -> Int32 {
        var set = signalSet(signals)
        var received: Int32 = 0
        while sigwait(&set, &received) != 0 {}
        return received
    }

    /// Takes `signals` (blocked) for the rest of the process on a thread named
    /// `name`, calling `handler` with each, one at a time, in arrival order.
    public static func handle(_ signals: [Int32], name: String, _ handler: @escaping @Sendable (Int32) -> Void) throws(IOError) {
        let started = startThread(name: name) {
            while true { handler(wait(signals)) }
        }
        switch started {
        case .success(let thread): pthread_detach(thread)
        case .failure(let e): throw e
        }
    }

    private static func signalSet(_ signals: [Int32]) -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return set
    }
}
