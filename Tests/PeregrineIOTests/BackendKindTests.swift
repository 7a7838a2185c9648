import Testing
import PeregrineIO

@Suite("BackendKindTests")
struct BackendKindTests {
    @Test func knownNamesParse() throws {
        #expect(try BackendKind.parse("epoll").get() == .epoll)
        #expect(try BackendKind.parse("IO_URING").get() == .ioUring)
        #expect(try BackendKind.parse("uring").get() == .ioUring)
        #expect(try BackendKind.parse("Dispatch").get() == .dispatch)
    }

    @Test func wrongNameGivesAClearMessage() {
        switch BackendKind.parse("kqueue") {
        case .success(let kind):
            Issue.record("'kqueue' parsed as \(kind)")
        case .failure(let error):
            #expect(error.description == "backend: unknown backend 'kqueue' (expected one of: io_uring, epoll, dispatch)")
        }
    }

    @Test func unsupportedFeatureMessageNamesTheOperationAndTheReason() {
        let error = IOError(.unsupported("kernel 5.10 lacks IORING_SETUP_SINGLE_ISSUER (needs 6.0)"), "io_uring_queue_init")
        #expect(error.description == "io_uring_queue_init: unsupported: kernel 5.10 lacks IORING_SETUP_SINGLE_ISSUER (needs 6.0)")
    }

    @Test(arguments: BackendKind.testable)
    func loopTypeMatchesKind(_ kind: BackendKind) {
        #expect(kind.loopType.kind == kind)
    }
}
