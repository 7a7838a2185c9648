// The io_uring backend.
//
// Design:
// - Ring: `io_uring_queue_init_params` with SINGLE_ISSUER | DEFER_TASKRUN |
//   COOP_TASKRUN (falling back to COOP_TASKRUN alone, then no flags, when the
//   kernel refuses with EINVAL). DEFER_TASKRUN makes the kernel run completion
//   work only when this loop asks for events (once per turn), instead of
//   interrupting the thread with task-work IPIs at arbitrary points: fewer
//   context switches, completions are batched, and CQEs appear exactly where
//   the loop reaps them. SINGLE_ISSUER binds the ring to one task, so the ring
//   is created disabled (R_DISABLED) and enabled from the thread that calls
//   `run()` — loops are created on one thread and run on another.
// - Submission: operations only fill SQEs; `run()` submits everything queued
//   during a turn with one `io_uring_submit_and_wait[_timeout]` (the timeout
//   is the timer wheel's next tick). A full SQ is flushed early.
// - Completion slots: `user_data` is (generation << 32 | slot index) into a
//   preallocated `URingSlotTable`; the slot holds the op kind, fd, the caller's
//   callback, partial-progress counters and kernel-visible scratch (msghdr,
//   sockaddr, iovecs, timespec) that must stay alive until the CQE.
// - Accept is multishot, re-armed when a CQE arrives without IORING_CQE_F_MORE
//   (single-shot accept if the kernel rejects multishot). Receive is
//   IORING_OP_RECV straight into the caller's buffer (no provided-buffer ring:
//   the contract gives each receive its own caller-owned buffer, so a buffer
//   ring would add a copy). Sends loop on partial results; sendv uses SENDMSG
//   with the iovec array kept in the slot; both use MSG_NOSIGNAL.
// - Connect: IORING_OP_CONNECT linked (IOSQE_IO_LINK) to IORING_OP_LINK_TIMEOUT;
//   a connect cancelled by its link timeout reports `.timedOut`.
// - Close/cancel: `close` marks the fd closing and submits one
//   IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_FD | _ALL. Every op on a
//   closing fd completes (its CQE arrives, cancelled or not) and its callback
//   is invoked exactly once with `.cancelled`. The fd itself is closed only when
//   its pending count (ops + the cancel op) drops to zero, so the kernel cannot
//   reuse the number while a cancel-by-fd or an op might still refer to it.
// - fdatasync ordering: io_uring runs SQEs out of order, so each file keeps
//   epochs: writes join the current epoch, `fdatasync` closes it and its
//   IORING_OP_FSYNC (DATASYNC) SQE is held back until no write of an epoch up
//   to its own is still in flight. Unlike IOSQE_IO_DRAIN this does not stall
//   the sockets sharing the ring, and later writes are not delayed. When the
//   only such write is the SQE just prepared (the spool's group commit: one
//   buffer written, then synced), the fsync is linked behind it
//   (IOSQE_IO_LINK) and goes to the kernel in the same submission instead of
//   a loop turn after the write's completion (off by default: not measured
//   better here; PEREGRINE_URING_FSYNC_LINK=1). A linked fsync cancelled
//   because its write failed or was short waits again like any other.
// - Timers: the shared TimerWheel (advance(to:due:) + takeDue, so a timer
//   cancelled by an earlier callback of the same turn never fires); wait
//   timeout = next tick. Wake-ups from
//   other threads (`execute`, `stop`) write an eventfd whose read is kept armed
//   in the ring.
#if canImport(Glibc)
import Glibc
#endif
import CURing
import Synchronization

public final class URingLoop: EventLoop {
    public static let kind: BackendKind = .ioUring

    let ring: UnsafeMutablePointer<io_uring>
    var slots = URingSlotTable(capacity: 1024)
    var fds: [URingFDState] = Array(repeating: URingFDState(), count: 1024)
    /// Pipes for sendFile's splices, kept empty between uses (URingLoop+SendFile.swift).
    var splicePipes: [URingSplicePipe] = []
    /// Setup flags the kernel accepted (for diagnostics and tests).
    public let setupFlags: UInt32
    /// False once the kernel refused multishot accept; single-shot is re-armed then.
    var multishotAccept = true
    /// The last file write prepared: its fd and the SQ tail right after its
    /// SQE. While that SQE is still unsubmitted and last in the queue, an
    /// fdatasync it alone blocks is linked behind it (URingLoop+Files.swift).
    var lastFileWrite: (fd: Int32, tail: UInt32) = (-1, 0)
    /// fdatasyncs submitted linked behind their write (tests, diagnostics).
    public internal(set) var linkedFsyncs = 0
    /// Off unless PEREGRINE_URING_FSYNC_LINK=1 is in the environment: on this
    /// machine it did not measure better than waiting for the write's
    /// completion (results/esp-2026-12-05b/README.md §3), so it is kept only
    /// as an option to measure again on a quiet machine, one binary both ways.
    var linksFsyncToWrite = URingLoop.fsyncLinkEnabled
    static let fsyncLinkEnabled: Bool = {
        guard let v = getenv("PEREGRINE_URING_FSYNC_LINK") else { return false }
        return String(cString: v) == "1"
    }()

    private let wakeFD: Int32
    private let wakeBuffer: UnsafeMutablePointer<UInt64>
    private var ringEnabled = false
    private var runThread: pthread_t? = nil
    private let stopRequested = Atomic<Bool>(false)
    private let inbox = HandoffInbox()
    private var inboxBatch: [@Sendable () -> Void] = []
    /// errnos of failed io_uring_enter calls already reported (bit per errno).
    private var reportedEnterErrors: UInt64 = 0
    /// Where such a report goes (stderr; tests capture it).
    var reportEnterError: (String) -> Void = { fputs($0, stderr) }
    private var wheel: TimerWheel
    private var dueTimers: [TimerHandle] = []
    /// Completions decided without the kernel (errors on submit, ops on a
    /// closing fd): run at the start of the next turn, never re-entrantly.
    var deferred: [() -> Void] = []
    private var deferredBatch: [() -> Void] = []
    private let cqeBatch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private static let cqeBatchSize = 256
    private let waitTimeout: UnsafeMutablePointer<__kernel_timespec>

    public private(set) var now: UInt64

    static let ringEntries: UInt32 = 4096
    static let cqEntries: UInt32 = 16384

    public convenience init() throws(IOError) {
        try self.init(ringEntries: Self.ringEntries, cqEntries: Self.cqEntries)
    }

    /// A loop with rings of the given sizes (tests drive a full SQ and CQ
    /// overflow with tiny ones; the kernel clamps what it cannot give).
    init(ringEntries: UInt32, cqEntries: UInt32) throws(IOError) {
        Posix.ignoreSIGPIPE()
        let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let coop = PEREGRINE_IORING_SETUP_COOP_TASKRUN
        let deferTaskrun = PEREGRINE_IORING_SETUP_SINGLE_ISSUER | PEREGRINE_IORING_SETUP_DEFER_TASKRUN
        // SUBMIT_ALL: one bad SQE must not hold back the rest of the turn's batch.
        let submitAll = PEREGRINE_IORING_SETUP_SUBMIT_ALL
        let attempts: [UInt32] = [deferTaskrun | coop | submitAll, deferTaskrun | submitAll, coop | submitAll, 0]
        var accepted: UInt32? = nil
        var lastError: Int32 = 0
        for extra in attempts {
            var params = io_uring_params()
            params.flags = extra | PEREGRINE_IORING_SETUP_R_DISABLED | PEREGRINE_IORING_SETUP_CQSIZE
                | PEREGRINE_IORING_SETUP_CLAMP
            params.cq_entries = max(cqEntries, ringEntries)
            let rc = io_uring_queue_init_params(ringEntries, ring, &params)
            if rc == 0 { accepted = params.flags; break }
            lastError = -rc
            if lastError != EINVAL { break }   // only a flag refusal is worth another try
        }
        guard let flags = accepted else {
            ring.deallocate()
            throw IOError(.unsupported(Self.explainSetupFailure(lastError)), "io_uring_queue_init")
        }
        self.ring = ring
        self.setupFlags = flags

        if let missing = Self.missingOpcode(ring) {
            io_uring_queue_exit(ring); ring.deallocate()
            throw IOError(.unsupported(missing), "io_uring_get_probe")
        }

        let efd = eventfd(0, Int32(EFD_CLOEXEC))
        if efd < 0 {
            let e = errno
            io_uring_queue_exit(ring); ring.deallocate()
            throw IOError(.errno(e), "eventfd")
        }
        wakeFD = efd
        wakeBuffer = .allocate(capacity: 1); wakeBuffer.initialize(to: 0)
        cqeBatch = .allocate(capacity: Self.cqeBatchSize)
        cqeBatch.initialize(repeating: nil, count: Self.cqeBatchSize)
        waitTimeout = .allocate(capacity: 1); waitTimeout.initialize(to: __kernel_timespec())
        now = monotonicNanoseconds()
        wheel = TimerWheel(now: now)
        inboxBatch.reserveCapacity(64)
        armWakeRead()
    }

    deinit {
        io_uring_queue_exit(ring)
        // Descriptors whose close was waiting for in-flight operations.
        for fd in fds.indices where fds[fd].closing { Glibc.close(Int32(fd)) }
        Glibc.close(wakeFD)
        for p in splicePipes { p.close() }
        ring.deallocate()
        wakeBuffer.deallocate()
        cqeBatch.deallocate()
        waitTimeout.deallocate()
    }

    private static func explainSetupFailure(_ e: Int32) -> String {
        switch e {
        case ENOSYS:
            return "the kernel has no io_uring support (ENOSYS); use --backend epoll"
        case EPERM:
            var detail = ""
            let f = open("/proc/sys/kernel/io_uring_disabled", O_RDONLY | O_CLOEXEC)
            if f >= 0 {
                var bytes = [UInt8](repeating: 0, count: 8)
                let n = Glibc.read(f, &bytes, bytes.count)
                Glibc.close(f)
                if n > 0, let text = String(validating: bytes[..<n], as: UTF8.self) {
                    detail = " (kernel.io_uring_disabled = \(text.filter { !$0.isWhitespace }))"
                }
            }
            return "io_uring is disabled for this process\(detail) or blocked by a seccomp/container policy (EPERM); use --backend epoll"
        case ENOMEM:
            return "not enough locked memory for the rings (ENOMEM); raise RLIMIT_MEMLOCK or use --backend epoll"
        default:
            return "io_uring_queue_init_params failed: \(String(cString: strerror(e))) (errno \(e))"
        }
    }

    private static func missingOpcode(_ ring: UnsafeMutablePointer<io_uring>) -> String? {
        guard let probe = io_uring_get_probe_ring(ring) else {
            return "the kernel cannot report io_uring opcodes (IORING_REGISTER_PROBE, Linux < 5.6); Linux >= 6.1 is required"
        }
        defer { io_uring_free_probe(probe) }
        let required: [(Int32, String)] = [
            (PEREGRINE_IORING_OP_ACCEPT, "ACCEPT"), (PEREGRINE_IORING_OP_CONNECT, "CONNECT"),
            (PEREGRINE_IORING_OP_RECV, "RECV"), (PEREGRINE_IORING_OP_SEND, "SEND"),
            (PEREGRINE_IORING_OP_SENDMSG, "SENDMSG"), (PEREGRINE_IORING_OP_RECVMSG, "RECVMSG"),
            (PEREGRINE_IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"), (PEREGRINE_IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"),
            (PEREGRINE_IORING_OP_READ, "READ"), (PEREGRINE_IORING_OP_WRITE, "WRITE"),
            (PEREGRINE_IORING_OP_FSYNC, "FSYNC"),
        ]
        for (op, name) in required where peregrine_opcode_supported(probe, op) == 0 {
            return "the kernel lacks io_uring opcode IORING_OP_\(name); Linux >= 6.1 is required"
        }
        return nil
    }

    // MARK: Running

    public func run() {
        if !ringEnabled {
            // SINGLE_ISSUER: the thread that enables the ring becomes its submitter.
            let rc = peregrine_enable_rings(ring)
            if rc < 0 && rc != -EBADFD {
                let message = "peregrine: io_uring_enable_rings failed: \(String(cString: strerror(-rc)))\n"
                fputs(message, stderr)
                return
            }
            ringEnabled = true
            runThread = pthread_self()
        } else if setupFlags & PEREGRINE_IORING_SETUP_SINGLE_ISSUER != 0,
                  let owner = runThread, pthread_equal(owner, pthread_self()) == 0 {
            // The kernel would refuse every submission (EEXIST): say so instead of spinning.
            fputs("peregrine: an io_uring loop (SINGLE_ISSUER) must always be run on the thread that first ran it\n", stderr)
            return
        }
        while !stopRequested.load(ordering: .acquiring) {
            turn()
        }
        stopRequested.store(false, ordering: .releasing)
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    public func execute(_ work: @escaping @Sendable () -> Void) {
        if inbox.push(work) { wake() }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, MemoryLayout<UInt64>.size)
    }

    private func armWakeRead() {
        let index = slots.allocate(.wake, fd: wakeFD, completion: .none)
        guard let sqe = nextSQE() else {
            _ = slots.release(index)
            // SQ full and the kernel refused the flush (CQ overflow: EBUSY): without
            // the read, execute() and stop() from other threads would go unnoticed
            // until some other completion or timer came (never, on an idle loop).
            // Retried next turn, which does not wait while `deferred` is non-empty.
            deferred.append { [unowned self] in armWakeRead() }
            return
        }
        io_uring_prep_read(sqe, wakeFD, wakeBuffer, UInt32(MemoryLayout<UInt64>.size), 0)
        sqe.pointee.user_data = slots.userData(index)
    }

    /// One loop turn: timers, handed-off work, deferred completions, then one
    /// submit-and-wait, then every completion that is ready.
    private func turn() {
        now = monotonicNanoseconds()
        wheel.advance(to: now, due: &dueTimers)
        if !dueTimers.isEmpty {
            // takeDue returns nil for a timer cancelled by an earlier callback of this batch.
            for handle in dueTimers {
                if let fire = wheel.takeDue(handle) { fire() }
            }
            dueTimers.removeAll(keepingCapacity: true)
        }
        inbox.drain(into: &inboxBatch)
        if !inboxBatch.isEmpty {
            for work in inboxBatch { work() }
            inboxBatch.removeAll(keepingCapacity: true)
        }
        runDeferred()

        let busy = !deferred.isEmpty || !inbox.isEmpty || stopRequested.load(ordering: .relaxed)
        if busy {
            noteEnterResult(io_uring_submit_and_get_events(ring), "submit")
        } else if let wait = wheel.nanosecondsUntilNextTick(now: monotonicNanoseconds()) {
            if wait == 0 {
                noteEnterResult(io_uring_submit_and_get_events(ring), "submit")
            } else {
                waitTimeout.pointee.tv_sec = Int64(wait / 1_000_000_000)
                waitTimeout.pointee.tv_nsec = Int64(wait % 1_000_000_000)
                var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
                noteEnterResult(io_uring_submit_and_wait_timeout(ring, &cqe, 1, waitTimeout, nil), "wait")
            }
        } else {
            noteEnterResult(io_uring_submit_and_wait(ring, 1), "wait")
        }
        now = monotonicNanoseconds()
        reapCompletions()
    }

    /// A turn whose io_uring_enter failed submits and reaps on the next one
    /// (SQEs stay queued, CQEs stay in the ring), so the loop goes on. Expected
    /// results (timeout, signal, transient shortage) are quiet; anything else is
    /// reported once per errno so a loop in trouble is visible in the log.
    /// Returns true when this call reported the error.
    @inline(__always) @discardableResult
    func noteEnterResult(_ rc: Int32, _ what: StaticString) -> Bool {
        guard rc < 0 else { return false }
        let e = -rc
        if e == ETIME || e == EINTR || e == EAGAIN || e == EBUSY { return false }
        let bit: UInt64 = e < 64 ? 1 << UInt64(e) : 1 << 63
        guard reportedEnterErrors & bit == 0 else { return false }
        reportedEnterErrors |= bit
        reportEnterError("peregrine: io_uring_enter (\(what)) failed: \(String(cString: strerror(e))) (errno \(e)); "
                         + "the loop keeps running\n")
        return true
    }

    private func runDeferred() {
        guard !deferred.isEmpty else { return }
        swap(&deferred, &deferredBatch)
        for work in deferredBatch { work() }
        deferredBatch.removeAll(keepingCapacity: true)
    }

    private func reapCompletions() {
        var total = 0
        while total < 8 * Self.cqeBatchSize {
            let n = Int(io_uring_peek_batch_cqe(ring, cqeBatch, UInt32(Self.cqeBatchSize)))
            if n == 0 { break }
            for i in 0..<n {
                // Copy the CQE out and consume it before running any callback.
                guard let cqe = cqeBatch[i] else { continue }
                let userData = cqe.pointee.user_data, res = cqe.pointee.res, flags = cqe.pointee.flags
                io_uring_cq_advance(ring, 1)
                complete(userData: userData, res: res, flags: flags)
            }
            total += n
        }
    }

    // MARK: Submission helpers

    /// The next free SQE; flushes the SQ to the kernel once when it is full.
    @inline(__always)
    func nextSQE() -> UnsafeMutablePointer<io_uring_sqe>? {
        if let sqe = io_uring_get_sqe(ring) { return sqe }
        guard ringEnabled else { return nil }
        noteEnterResult(io_uring_submit(ring), "flush")
        return io_uring_get_sqe(ring)
    }

    /// Makes room for `count` SQEs that must go to the kernel together (a link).
    func reserveSQEs(_ count: UInt32) -> Bool {
        if io_uring_sq_space_left(ring) >= count { return true }
        guard ringEnabled else { return false }
        noteEnterResult(io_uring_submit(ring), "flush")
        return io_uring_sq_space_left(ring) >= count
    }

    @inline(__always)
    func state(_ fd: Int32) -> URingFDState {
        let i = Int(fd)
        return i < fds.count ? fds[i] : URingFDState()
    }

    /// Makes `fds[fd]` addressable and fresh (a descriptor number just handed out).
    func registerFD(_ fd: Int32) {
        let i = Int(fd)
        if i >= fds.count {
            var count = fds.count
            while count <= i { count *= 2 }
            fds.append(contentsOf: repeatElement(URingFDState(), count: count - fds.count))
        }
        fds[i] = URingFDState()
    }

    @inline(__always)
    func ensureFD(_ fd: Int32) -> Bool {
        guard fd >= 0 else { return false }
        if Int(fd) >= fds.count { registerFD(fd) }
        return true
    }

    /// Closes the descriptor once close was asked and nothing is in flight on it.
    func finishCloseIfIdle(_ fd: Int32) {
        let i = Int(fd)
        guard i < fds.count, fds[i].closing, fds[i].pending <= 0 else { return }
        fds[i] = URingFDState()
        Glibc.close(fd)
    }

    /// Submits IORING_OP_ASYNC_CANCEL for every operation on `fd`; the cancel
    /// op counts as pending so the fd outlives it.
    func cancelAll(on fd: Int32) {
        let index = slots.allocate(.cancel, fd: fd, completion: .none)
        guard let sqe = nextSQE() else {
            _ = slots.release(index)
            // No SQE (ring not started yet): shut the socket down, which makes
            // every pending socket op complete with an error soon.
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            return
        }
        io_uring_prep_cancel_fd(sqe, fd, PEREGRINE_IORING_ASYNC_CANCEL_ALL)
        sqe.pointee.user_data = slots.userData(index)
        fds[Int(fd)].pending += 1
    }

    func fail(_ completion: URingCompletion, _ error: IOError) {
        switch completion {
        case .none: break
        case .void(let cb): deferred.append { cb(.failure(error)) }
        case .count(let cb): deferred.append { cb(.failure(error)) }
        case .socket(let cb): deferred.append { cb(.failure(error)) }
        case .datagram(let cb): deferred.append { cb(.failure(error)) }
        case .accept(let cb): deferred.append { cb(.failure(error)) }
        }
    }

    static func noSQE(_ operation: String) -> IOError {
        // Before run() the ring cannot be flushed; after, only a refused flush leaves it full.
        IOError(.errno(EBUSY), "\(operation): io_uring submission queue full")
    }

    // MARK: Completions

    private func complete(userData: UInt64, res: Int32, flags: UInt32) {
        if userData == URingSlotTable.ignoredUserData { return }
        guard let index = slots.resolve(userData) else { return }
        switch slots.slots[Int(index)].op {
        case .free: return
        case .wake:
            _ = slots.release(index)
            armWakeRead()
        case .cancel:
            let fd = slots.slots[Int(index)].fd
            _ = slots.release(index)
            fds[Int(fd)].pending -= 1
            finishCloseIfIdle(fd)
        case .accept: completeAccept(index, res: res, flags: flags)
        case .receive: completeReceive(index, res: res)
        case .send: completeSend(index, res: res)
        case .sendv: completeSendv(index, res: res)
        case .connect: completeConnect(index, res: res)
        case .receiveDatagram: completeReceiveDatagram(index, res: res)
        case .sendDatagram: completeSendDatagram(index, res: res)
        case .fileWrite: completeFileWrite(index, res: res)
        case .fileRead: completeFileRead(index, res: res)
        case .fsync: completeFsync(index, res: res)
        case .sendFile: completeSendFile(index, res: res)
        }
    }

    /// Maps a negative CQE result to an error value.
    @inline(__always)
    static func error(_ res: Int32, _ operation: String) -> IOError {
        -res == ECANCELED ? IOError(.cancelled, operation) : IOError(.errno(-res), operation)
    }

    // MARK: Timers

    @discardableResult
    public func scheduleTimer(after delay: UInt64, _ fire: @escaping () -> Void) -> TimerHandle {
        // Counted from the turn's `now` (the contract's time base, as in libuv).
        wheel.schedule(at: now &+ delay, fire)
    }

    public func cancelTimer(_ timer: TimerHandle) {
        wheel.cancel(timer)
    }
}
