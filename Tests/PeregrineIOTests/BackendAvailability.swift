import PeregrineIO
import PeregrineTestSupport
import Testing

extension BackendKind {
    /// Skips the current test case (reported as skipped, with the kernel's
    /// reason, never as passed) when this backend cannot start here: io_uring
    /// on an old kernel or under a seccomp filter. Probed once per process.
    func requireAvailable(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Skip.unlessAvailable("the \(rawValue) backend", sourceLocation: sourceLocation) { _ = try loopType.init() }
    }
}
