#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starts the programs the tests drive so that none outlives the test process.
///
/// Each child is started through `setpriv --pdeathsig KILL`, which sets
/// PR_SET_PDEATHSIG and then execs the program in place (same pid, same exit
/// status, same signals as before). The death signal follows the *thread*
/// that forked, and Swift Testing runs tests on pool threads that may exit,
/// so every spawn happens on one thread that lives as long as the process.
/// A test runner killed by an outer timeout therefore takes its daemons,
/// sinks and servers with it: none is left holding a port for the next run.
///
/// Not covered: programs that change their user id (smtp-sink -u nobody) or
/// daemonize (Postfix's master); the kernel clears the death signal for
/// them, and their tests stop them explicitly.
public enum ChildProcess {
    /// Runs `process` (configured, not started) as a child that dies with the test process.
    public static func run(_ process: Process) throws {
        BlockingSuites.noteBlockingCall("starts a child process")
        if let setpriv, let exe = process.executableURL?.path {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", exe] + (process.arguments ?? [])
        }
        let result = Unchecked<Result<Void, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        DescriptorBudget.shared {
            SpawnThread.shared.submit {
                result.value = Result { try process.run() }
                done.signal()
            }
            done.wait()
        }
        try result.value?.get()
    }

    static let setpriv: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// One thread that never exits, on which every child is forked.
private final class SpawnThread: @unchecked Sendable {
    static let shared = SpawnThread()
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in loop() }
        thread.name = "test-child-spawner"
        thread.start()
    }

    func submit(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }
}

/// The one limit every descriptor-heavy test shares.
///
/// A test that holds about 1,000 descriptors at once (500 connections, both
/// ends) runs alone among such tests and while no child process is being
/// started: with more than about 1,365 descriptors open, Foundation's
/// Process.run() reads past glibc's /proc/self/fd buffer
/// (swift-corelibs-foundation#5472, not in 6.3.1) and crashes the whole test
/// process, whichever suite was spawning. All test targets share that process.
/// It also raises RLIMIT_NOFILE itself, so no test depends on another having
/// raised it first (test order).
public enum DescriptorBudget {
    /// Runs `body` as the only descriptor-heavy test, with spawning held off.
    public static func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        _ = raisedFileLimit
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` (a spawn) while no descriptor-heavy test runs.
    static func shared<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    nonisolated(unsafe) private static let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
        let l = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        pthread_rwlock_init(l, nil)
        return l
    }()

    /// RLIMIT_NOFILE raised to min(hard limit, 65536), once.
    public static let raisedFileLimit: Void = {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        if getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = min(limit.rlim_max, 65536)
            _ = setrlimit(resource, &limit)
        }
    }()
}
