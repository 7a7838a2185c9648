#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// A suite whose tests block their thread (waitpid, blocking socket reads,
/// polling loops, semaphores) runs them here, off Swift Testing's cooperative
/// pool: `@Suite(.timeLimit(.minutes(10)), .blockingIO)`.
///
/// The cooperative pool has one thread per core (two on the CI machine) and
/// never grows. A test that blocks holds one of them for its whole length, so
/// two end-to-end tests waiting on their daemons stalled every other test,
/// async or not: the suite ran about two tests at a time on a machine that
/// was mostly idle, and a suite could pass its time limit while waiting for a
/// thread (LoadgenStalledTargetTests did). With this trait the suite's tests
/// run on threads of their own (BlockingTestExecutor), and at most
/// `BlockingSuites.width` such suites run at once, so the machine is busy but
/// not flooded with daemons.
///
/// The limit is taken per suite, not per test case: Swift Testing starts a
/// test case's time limit before the case's scope is entered, so a case that
/// queued for a slot would spend its limit waiting; a suite has no time limit
/// of its own. Test cases inherit the executor (task executor preference is
/// inherited by child tasks, and Swift Testing runs cases in task groups).
public struct BlockingIOTrait: SuiteTrait, TestScoping {
    public var isRecursive: Bool { false }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        test.isSuite && testCase == nil ? self : nil
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        guard BlockingSuites.enabled else { return try await function() }
        try await BlockingSuites.admission.run {
            try await withTaskExecutorPreference(BlockingTestExecutor.shared) {
                try await function()
            }
        }
    }
}

extension Trait where Self == BlockingIOTrait {
    /// The suite's tests block threads: run them off the cooperative pool, a
    /// bounded number of such suites at a time.
    public static var blockingIO: Self { Self() }
}

public enum BlockingSuites {
    /// How many `.blockingIO` suites run at once: PEREGRINE_TEST_SUITE_WIDTH,
    /// else three per core. Their tests mostly wait on daemons and peers, so
    /// more than one per core keeps the cores busy; many more starts so many
    /// daemons at once that the tests' own bounded waits run out.
    public static let width: Int = {
        if let text = ProcessInfo.processInfo.environment["PEREGRINE_TEST_SUITE_WIDTH"],
           let n = Int(text), n > 0 {
            return n
        }
        return max(2, 3 * ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// PEREGRINE_TEST_BLOCKING_IO=0 runs these suites on the cooperative pool
    /// as before (for comparing the two, and as a way back if a test needs it).
    public static let enabled = ProcessInfo.processInfo.environment["PEREGRINE_TEST_BLOCKING_IO"] != "0"

    static let admission = AsyncSemaphore(width)
}

/// A counting semaphore whose waiters suspend instead of blocking a thread.
final class AsyncSemaphore: @unchecked Sendable {
    private let lock = NSLock()
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = count }

    func run<T>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            lock.lock()
            if free > 0 {
                free -= 1
                lock.unlock()
                waiter.resume()
            } else {
                waiters.append(waiter)
                lock.unlock()
            }
        }
    }

    private func release() {
        lock.lock()
        if waiters.isEmpty {
            free += 1
            lock.unlock()
        } else {
            let next = waiters.removeFirst()
            lock.unlock()
            next.resume()
        }
    }
}

/// A task executor that runs each job on a thread of its own pool, which
/// grows whenever every thread is busy (blocked) and a job waits: a test that
/// blocks on work another job must do (an `async let` child, a task group)
/// can never starve it, as it could on a pool of fixed width. Threads stay
/// for the process's lifetime; their number is the peak of jobs running at
/// once, a few dozen.
public final class BlockingTestExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = BlockingTestExecutor()

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var idleThreads = 0

    private init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        // Every queued job needs a thread that is waiting, or a new one.
        let spawn = jobs.count > idleThreads
        if !spawn { condition.signal() }
        condition.unlock()
        if spawn { startThread() }
    }

    private func startThread() {
        let thread = Thread { [self] in work() }
        thread.name = "blocking-test"
        // As large as a cooperative-pool thread's: test bodies run deep
        // synchronous code (parsers, TLS) on it.
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Whether the calling thread is one of this executor's.
    public static var isCurrentThread: Bool { Thread.current.threadDictionary[threadKey] != nil }
    private static let threadKey = "peregrine.blocking-test-thread"

    private func work() {
        Thread.current.threadDictionary[Self.threadKey] = true
        while true {
            condition.lock()
            while jobs.isEmpty {
                idleThreads += 1
                condition.wait()
                idleThreads -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

extension BlockingSuites {
    /// Says once per test, on stderr, when a test blocks a thread of the
    /// cooperative pool (it runs in a task that is not on BlockingTestExecutor):
    /// its suite lacks `.blockingIO`. Called where the support code blocks
    /// (starting a child process). A warning, not a failure: the test still
    /// works, it only holds back every other test while it waits.
    static func noteBlockingCall(_ what: String) {
        guard enabled, !BlockingTestExecutor.isCurrentThread, withUnsafeCurrentTask(body: { $0 != nil }),
              let test = Test.current else { return }
        let name = "\(test.id)"
        let first = warned.withLock { $0.insert(name).inserted }
        if first {
            FileHandle.standardError.write(Data(
                "warning: \(name) \(what) on a cooperative-pool thread: add .blockingIO to its @Suite (BlockingTestExecutor.swift)\n".utf8))
        }
    }

    private static let warned = LockedSet()
}

final class LockedSet: @unchecked Sendable {
    private let lock = NSLock()
    private var names = Set<String>()
    func withLock<T>(_ body: (inout Set<String>) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(&names) }
}
