#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// The portable baseline backend: libdispatch sources on one serial queue per loop.
///
/// Threading. All work and every callback run on `queue`, a serial
/// DispatchQueue private to this loop: that queue *is* "the loop's thread" of
/// the `EventLoop` contract (libdispatch may run successive blocks on
/// different pool threads, but never two at once, and with full memory
/// ordering between them). `run()` only parks the calling thread on a
/// semaphore until `stop()`. The queue is kept suspended while the loop is
/// not running (before the first `run()` and after `stop()`), so nothing runs
/// outside `run()`; sources, timers and `execute` work that become ready
/// meanwhile simply wait.
///
/// Turns. There is no single `epoll_wait` here, so a "turn" is one block the
/// queue runs: a source's event handler, the timer tick, an `execute` batch
/// or a file completion. Every such block goes through `turn(_:)`, which reads
/// the monotonic clock once into `now` at its start, and at its end runs the
/// completions that operations finished eagerly during it (an eager `send`
/// that wrote everything at once calls back there, not from inside `send`,
/// so callers never see re-entrant callbacks and the stack stays flat). So
/// `now` is constant for everything one wake-up triggers, as on epoll.
///
/// Sources. Each socket gets at most one read and one write DispatchSource,
/// created on first need. A source is resumed while an operation waits on it
/// and suspended lazily: the read source when it fires with no receive
/// pending, the write source as soon as its send queue is empty (a writable
/// socket would otherwise fire continuously). Every operation first tries the
/// syscall directly and only waits for readiness on EAGAIN. Closing cancels
/// the sources (resuming them first: libdispatch must never release a
/// suspended or inactive source) and the descriptor is closed only in the
/// last cancel handler, once libdispatch has stopped watching it.
///
/// Timers. One DispatchSourceTimer per loop drives a binary heap of
/// deadlines (deadline order, ties in scheduling order). The callback table
/// is consulted at the moment each timer fires, so a timer cancelled by an
/// earlier callback of the same batch never fires; see `DispatchTimers`.
///
/// Files. pwrite/pread/fdatasync run on a serial utility queue per loop (in
/// call order, so an fdatasync covers every write issued before it) and post
/// their completion back onto the loop queue.
public final class DispatchLoop: EventLoop {
    public static let kind: BackendKind = .dispatch

    private static let counter = Atomic<Int>(0)

    let queue: DispatchQueue
    let fileQueue: DispatchQueue
    private let inbox = HandoffInbox()
    private var inboxBatch: [@Sendable () -> Void] = []

    /// Parks the `run()` thread.
    private let stopped = DispatchSemaphore(value: 0)
    /// Guards the queue's suspension count (stop may be called from any thread, more than once).
    private let runState = Mutex<RunState>(RunState())
    private struct RunState { var queueSuspended = true; var running = false; var stopRequested = false }

    /// The clock reading of the current turn.
    public private(set) var now: UInt64

    // Turn bookkeeping (queue only).
    var inTurn = false
    var completions: [Completion] = []
    private var drainScheduled = false
    /// Completions run per turn before yielding the queue to other sources.
    private static let completionsPerTurn = 4096

    // Sockets (queue only), indexed by descriptor.
    var sockets: [DispatchSocket?] = []
    // Timers (queue only).
    var timers: DispatchTimers
    var timerSource: DispatchSourceTimer

    /// Scratch iovec array for writev (queue only).
    let iovecs: UnsafeMutablePointer<iovec>
    static let iovecCapacity = 1024

    public init() throws(IOError) {
        Posix.ignoreSIGPIPE()
        let n = DispatchLoop.counter.add(1, ordering: .relaxed).newValue
        queue = DispatchQueue(label: "peregrine.dispatch.loop.\(n)")
        fileQueue = DispatchQueue(label: "peregrine.dispatch.files.\(n)", qos: .utility)
        now = monotonicNanoseconds()
        timers = DispatchTimers()
        timerSource = DispatchSource.makeTimerSource(queue: queue)
        iovecs = .allocate(capacity: DispatchLoop.iovecCapacity)
        // Not running yet: hold everything until run().
        queue.suspend()
        timerSource.setEventHandler { [weak self] in
            guard let self else { return }
            self.turn { self.fireDueTimers() }
        }
        timerSource.schedule(deadline: .distantFuture, repeating: .never)
        timerSource.resume()
    }

    deinit {
        // No block of ours is pending (each retains self), so tear down directly.
        timerSource.setEventHandler(handler: nil)
        timerSource.cancel()
        for case let s? in sockets { s.cancelSources() }
        sockets.removeAll()
        iovecs.deallocate()
        // libdispatch traps when a suspended queue is released.
        let suspended = runState.withLock { st -> Bool in
            let was = st.queueSuspended
            st.queueSuspended = false
            return was
        }
        if suspended { queue.resume() }
    }

    // MARK: Running

    public func run() {
        let resume = runState.withLock { st -> Bool in
            st.running = true
            // Resume even when stop() came first: its block must run to release us.
            if st.queueSuspended { st.queueSuspended = false; return true }
            return false
        }
        if resume { queue.resume() }
        stopped.wait()
        runState.withLock { st in st.running = false; st.stopRequested = false }
    }

    public func stop() {
        let signal = runState.withLock { st -> Bool in
            if st.stopRequested { return false }
            st.stopRequested = true
            return true
        }
        guard signal else { return }
        // Suspend from inside the queue so that run() returns on a turn
        // boundary: no block of this loop is running once it has returned.
        queue.async { [self] in
            let suspend = runState.withLock { st -> Bool in
                if st.queueSuspended { return false }
                st.queueSuspended = true
                return true
            }
            if suspend { queue.suspend() }
            stopped.signal()
        }
    }

    public func execute(_ work: @escaping @Sendable () -> Void) {
        if inbox.push(work) {
            queue.async { [self] in turn { runInbox() } }
        }
    }

    private func runInbox() {
        inbox.drain(into: &inboxBatch)
        for work in inboxBatch { work() }
        inboxBatch.removeAll(keepingCapacity: true)
    }

    // MARK: Turns and deferred completions

    /// A finished operation whose callback runs at the end of the turn.
    enum Completion {
        case unit((Result<Void, IOError>) -> Void, Result<Void, IOError>)
        case count((Result<Int, IOError>) -> Void, Result<Int, IOError>)
        case socket((Result<Socket, IOError>) -> Void, Result<Socket, IOError>)
        case datagram((Result<(Int, SocketAddress), IOError>) -> Void, Result<(Int, SocketAddress), IOError>)
    }

    /// Runs `body` as one loop turn (see the type's documentation).
    @inline(__always)
    func turn(_ body: () -> Void) {
        now = monotonicNanoseconds()
        inTurn = true
        body()
        drainCompletions()
        inTurn = false
    }

    /// Queues a callback for the end of the current turn (or a new turn when
    /// called outside one, which only misuse from a foreign thread can do).
    func complete(_ c: Completion) {
        completions.append(c)
        if !inTurn && !drainScheduled {
            drainScheduled = true
            queue.async { [self] in turn {} }
        }
    }

    private func drainCompletions() {
        drainScheduled = false
        var i = 0
        while i < completions.count {
            if i == DispatchLoop.completionsPerTurn {
                // Let other sources in; carry on in a fresh turn.
                completions.removeFirst(i)
                drainScheduled = true
                queue.async { [self] in turn {} }
                return
            }
            let c = completions[i]
            i += 1
            switch c {
            case .unit(let done, let r): done(r)
            case .count(let done, let r): done(r)
            case .socket(let done, let r): done(r)
            case .datagram(let done, let r): done(r)
            }
        }
        completions.removeAll(keepingCapacity: true)
    }
}
