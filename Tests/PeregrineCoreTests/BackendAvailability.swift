import PeregrineIO
import PeregrineTestSupport
import Testing

extension BackendKind {
    /// The backends that can start on this machine: parameterised tests run
    /// over these. One that cannot (io_uring on an old kernel or under a
    /// seccomp filter) has no test cases; the run prints why once, and
    /// BackendAvailabilityTests reports it as a skipped test with the reason.
    static let testable: [BackendKind] = allCases.filter { kind in
        Skip.isAvailable("the \(kind.rawValue) backend") { _ = try kind.loopType.init() }
    }

    /// Skips the current test (reported as skipped, with the kernel's reason,
    /// never as passed) when this backend cannot start here. For tests that
    /// name one backend; parameterised tests take `testable` instead.
    func requireAvailable(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Skip.unlessAvailable("the \(rawValue) backend", sourceLocation: sourceLocation) { _ = try loopType.init() }
    }
}
