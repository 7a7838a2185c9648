#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// What a test does when it cannot run on this machine (a backend the kernel
/// lacks): it is reported as skipped with the reason, never as passed. (A
/// missing tool is a setup defect, not a machine limit: those tests fail.) Each reason is also printed once on stderr, so a run on
/// a machine without io_uring says so at the top instead of once per case.
///
/// PEREGRINE_REQUIRE_ALL=1 (CI on a machine that has everything) turns every
/// such skip into a failure.
public enum Skip {
    /// Cancels the current test case as skipped (or fails it under PEREGRINE_REQUIRE_ALL).
    public static func because(_ reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Never {
        announce(reason)
        if ProcessInfo.processInfo.environment["PEREGRINE_REQUIRE_ALL"] == "1" {
            Issue.record("cannot run here: \(reason) (PEREGRINE_REQUIRE_ALL=1)", sourceLocation: sourceLocation)
            throw CannotRun(reason: reason)
        }
        try Test.cancel(Comment(rawValue: reason), sourceLocation: sourceLocation)
    }

    /// Whether `probe` succeeds here (cached under `name`); when it does not, the
    /// reason is printed once. Parameterised tests take their arguments from
    /// this, so a backend that cannot start here has no cases at all: Swift
    /// Testing's console shows a cancelled test *case* as "passed", which would
    /// be the silent pass this replaces. One plain test per backend
    /// (BackendAvailabilityTests) is then reported as skipped with the reason.
    public static func isAvailable(_ name: String, probe: () throws -> Void) -> Bool {
        lock.lock()
        let cached = probes[name]
        lock.unlock()
        let failure: String
        if let cached { failure = cached } else {
            do { try probe(); failure = "" } catch { failure = "\(error)" }
            lock.lock(); probes[name] = failure; lock.unlock()
        }
        if !failure.isEmpty { announce("\(name) cannot start here: \(failure)") }
        return failure.isEmpty
    }

    /// Skips unless `probe` succeeds; the probe's outcome is cached under `name`
    /// (a backend is probed once per process, not once per test).
    public static func unlessAvailable(_ name: String, sourceLocation: SourceLocation = #_sourceLocation,
                                       probe: () throws -> Void) throws {
        lock.lock()
        let cached = probes[name]
        lock.unlock()
        let failure: String?
        if let cached { failure = cached } else {
            do { try probe(); failure = "" } catch { failure = "\(error)" }
            lock.lock(); probes[name] = failure; lock.unlock()
        }
        if let failure, !failure.isEmpty {
            try because("\(name) cannot start here: \(failure)", sourceLocation: sourceLocation)
        }
    }

    struct CannotRun: Error, CustomStringConvertible {
        let reason: String
        var description: String { "cannot run here: \(reason)" }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var probes: [String: String] = [:]
    nonisolated(unsafe) private static var announced: Set<String> = []

    private static func announce(_ reason: String) {
        lock.lock()
        let first = announced.insert(reason).inserted
        lock.unlock()
        if first { fputs("peregrine tests: SKIPPING what needs it: \(reason)\n", stderr) }
    }
}
