#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CLinux

/// The epoll backend: one `epoll_wait` per turn into a preallocated event
/// array, non-blocking sockets, a hashed timer wheel driving the wait timeout,
/// an eventfd for cross-thread wake-ups and a writer thread for file I/O.
///
/// Edge-triggered, on purpose: every socket is registered once, for
/// `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`, and never modified again.
/// Because the interface is completion-style, every operation is attempted
/// eagerly first (a receive that can complete now does not wait for epoll);
/// only an `EAGAIN` parks it in the fd's slot, and the next edge retries it.
/// An edge that arrives while nothing is parked is simply dropped: the next
/// operation's eager attempt sees the data (or EOF, or the error) anyway.
/// Level-triggered would need an `epoll_ctl(MOD)` per parked/unparked
/// operation to avoid a busy loop on writable sockets; edge-triggered needs
/// none, so the hot path is recv/send plus one `epoll_wait` per turn.
///
/// Completions are never delivered re-entrantly: an operation that completes
/// during its own call (or during event processing) queues its callback, and
/// the loop runs queued callbacks later in the same turn. That keeps the
/// stack flat (an echo loop does not recurse) and matches io_uring, where a
/// completion always arrives through the completion queue.
///
/// Per-fd state lives in `slots`, an array indexed by fd whose entries are
/// created once per fd number and reused after close, so the socket hot path
/// allocates nothing: callbacks and buffers are parked in the slot.
public final class EpollLoop: EventLoop {
    public static let kind: BackendKind = .epoll

    let epfd: Int32
    let waker: EpollWaker
    let eventCapacity: Int32 = 256
    let events: UnsafeMutablePointer<epoll_event>
    /// Scratch iovecs for sendv (`IOV_MAX` entries), reused by every gather write.
    let iovecs: UnsafeMutablePointer<iovec>
    let iovecCapacity = 1024

    var slots: [EpollSlot] = []
    var timers: TimerWheel
    var dueTimers: [TimerHandle] = []
    var completions: [EpollCompletion] = []
    var running: [EpollCompletion] = []
    var handoffBatch: [@Sendable () -> Void] = []
    let stopRequested = Atomic<Bool>(false)
    var fileWorker: EpollFileWorker?

    public private(set) var now: UInt64

    public init() throws(IOError) {
        Posix.ignoreSIGPIPE()
        let ep = epoll_create1(PEREGRINE_EPOLL_CLOEXEC)
        if ep < 0 { throw IOError.lastErrno("epoll_create1") }
        let efd = eventfd(0, PEREGRINE_EFD_CLOEXEC | PEREGRINE_EFD_NONBLOCK)
        if efd < 0 {
            let e = IOError.lastErrno("eventfd")
            Glibc.close(ep)
            throw e
        }
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue  // level-triggered: drained on every wake
        ev.data.u64 = UInt64.max
        if epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0 {
            let e = IOError.lastErrno("epoll_ctl(eventfd)")
            Glibc.close(efd); Glibc.close(ep)
            throw e
        }
        epfd = ep
        waker = EpollWaker(eventfd: efd)
        events = .allocate(capacity: Int(eventCapacity))
        events.initialize(repeating: epoll_event(), count: Int(eventCapacity))
        iovecs = .allocate(capacity: iovecCapacity)
        iovecs.initialize(repeating: iovec(), count: iovecCapacity)
        now = monotonicNanoseconds()
        timers = TimerWheel(now: now)
        completions.reserveCapacity(256)
        running.reserveCapacity(256)
    }

    deinit {
        fileWorker?.shutdownAndJoin()
        for slot in slots where slot.kind != .closed {
            Glibc.close(slot.fd)
        }
        Glibc.close(epfd)
        Glibc.close(waker.eventfd)
        events.deallocate()
        iovecs.deallocate()
    }

    // MARK: Running

    public func run() {
        defer { stopRequested.store(false, ordering: .relaxed) }
        while !stopRequested.load(ordering: .acquiring) {
            turn()
        }
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        waker.wake()
    }

    public func execute(_ work: @escaping @Sendable () -> Void) {
        waker.push(work)
    }

    /// One loop turn: wait, dispatch readiness, hand-offs, timers, completions.
    func turn() {
        let timeout: Int32
        if !completions.isEmpty || !waker.inbox.isEmpty {
            timeout = 0
        } else if let ns = timers.nanosecondsUntilNextTick(now: monotonicNanoseconds()) {
            let ms = (ns + 999_999) / 1_000_000
            timeout = ms > UInt64(Int32.max) ? Int32.max : Int32(ms)
        } else {
            timeout = -1
        }
        let n = epoll_wait(epfd, events, eventCapacity, timeout)
        now = monotonicNanoseconds()
        if n > 0 {
            for i in 0..<Int(n) {
                let ev = events[i]
                dispatch(token: ev.data.u64, events: ev.events)
            }
        }
        runCompletions()
        runHandoffs()
        runTimers()
        runCompletions()
    }

    func runHandoffs() {
        waker.inbox.drain(into: &handoffBatch)
        if handoffBatch.isEmpty { return }
        for work in handoffBatch { work() }
        handoffBatch.removeAll(keepingCapacity: true)
    }

    func runTimers() {
        timers.advance(to: now, due: &dueTimers)
        if dueTimers.isEmpty { return }
        for handle in dueTimers {
            if let fire = timers.takeDue(handle) { fire() }
        }
        dueTimers.removeAll(keepingCapacity: true)
    }

    /// Runs queued completions. Callbacks queued meanwhile run too, up to a
    /// bound of passes; the rest wait for the next turn (with a zero timeout)
    /// so that a socket that is always ready cannot starve the others.
    func runCompletions() {
        var passes = 0
        while !completions.isEmpty && passes < 8 {
            swap(&completions, &running)
            for c in running { c.run() }
            running.removeAll(keepingCapacity: true)
            passes += 1
        }
    }

    @inline(__always)
    func complete(_ c: EpollCompletion) {
        completions.append(c)
    }

    // MARK: Timers

    @discardableResult
    public func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        let (deadline, overflow) = now.addingReportingOverflow(delay)
        return timers.schedule(at: overflow ? UInt64.max : deadline, fire)
    }

    public func cancelTimer(_ timer: TimerHandle) {
        timers.cancel(timer)
    }

    // MARK: Slots

    /// The slot for `fd`, created the first time this fd number is seen.
    func slot(for fd: Int32) -> EpollSlot {
        let i = Int(fd)
        if i >= slots.count {
            slots.reserveCapacity(Swift.max(i + 1, slots.count * 2))
            while slots.count <= i { slots.append(EpollSlot(fd: Int32(slots.count))) }
        }
        return slots[i]
    }

    /// The open slot for `fd`, or nil when the fd is not (or no longer) ours.
    @inline(__always)
    func openSlot(_ fd: Int32) -> EpollSlot? {
        let i = Int(fd)
        guard i >= 0, i < slots.count else { return nil }
        let s = slots[i]
        return s.kind == .closed ? nil : s
    }

    /// Registers `fd` edge-triggered for everything, once for its lifetime.
    func register(_ fd: Int32, kind: EpollSlot.Kind) throws(IOError) -> EpollSlot {
        let s = slot(for: fd)
        s.open(kind: kind)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        ev.data.u64 = s.token
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            let e = IOError.lastErrno("epoll_ctl(ADD)")
            s.reset()
            throw e
        }
        return s
    }

    /// Readiness for one fd: retries whatever is parked in its slot.
    func dispatch(token: UInt64, events ev: UInt32) {
        if token == UInt64.max {
            waker.drainEventfd()
            return
        }
        let fd = Int32(truncatingIfNeeded: token & 0xffff_ffff)
        guard let s = openSlot(fd), s.token == token else { return }  // stale event for a closed fd
        let readable = ev & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let writable = ev & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        switch s.kind {
        case .listener:
            if readable { drainAccept(s) }
        case .connecting:
            if writable { finishConnect(s) }
        case .stream, .datagram:
            if readable { s.readable = true }
            if writable { s.writable = true }
            if readable && s.hasReceive { attemptReceive(s) }
            if writable && s.writeHead < s.writes.count { flushWrites(s) }
        case .closed:
            break
        }
    }
}

/// The cross-thread half of the loop: the hand-off inbox and the eventfd that
/// wakes `epoll_wait`. Shared with the file writer thread.
final class EpollWaker: @unchecked Sendable {
    let inbox = HandoffInbox()
    let eventfd: Int32

    init(eventfd: Int32) { self.eventfd = eventfd }

    func push(_ work: @escaping @Sendable () -> Void) {
        if inbox.push(work) { wake() }
    }

    func wake() {
        var one: UInt64 = 1
        // EAGAIN means the counter is saturated: the loop is awake anyway.
        _ = Glibc.write(eventfd, &one, 8)
    }

    func drainEventfd() {
        var value: UInt64 = 0
        _ = Glibc.read(eventfd, &value, 8)
    }
}
