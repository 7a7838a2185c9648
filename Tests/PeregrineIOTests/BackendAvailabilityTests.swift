import PeregrineIO
import Testing

/// One test per backend that says whether it can start on this machine: a
/// backend that cannot is reported here once as skipped, with the kernel's
/// reason (PEREGRINE_REQUIRE_ALL=1 makes that a failure), and every
/// parameterised test simply has no cases for it (BackendKind.testable).
@Suite struct BackendAvailabilityTests {
    @Test func ioUringCanStartHere() throws { try BackendKind.ioUring.requireAvailable() }
    @Test func epollCanStartHere() throws { try BackendKind.epoll.requireAvailable() }
    @Test func dispatchCanStartHere() throws { try BackendKind.dispatch.requireAvailable() }
}
