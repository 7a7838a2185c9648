import Testing
import PeregrineTestSupport
import PeregrineIO

/// Runs a body on one backend (the tests are parameterised over BackendKind,
/// so each backend is its own test case). A backend that cannot start here is
/// reported as a skipped case; any other init failure is a test failure.
protocol SpoolLoopVisitor {
    func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws
}

enum SpoolLoops {
    static func forBackend(_ kind: BackendKind, _ visitor: some SpoolLoopVisitor) throws {
        try open(kind.loopType, kind: kind, visitor)
    }

    private static func open<L: EventLoop>(_ type: L.Type, kind: BackendKind, _ visitor: some SpoolLoopVisitor) throws {
        try visitor.visit(type, kind: kind)
    }

    /// Makes a loop; skips the test case when the backend cannot start here.
    static func makeLoop<L: EventLoop>(_ type: L.Type) throws -> L {
        do { return try L() } catch {
            if case .unsupported = error.kind { try Skip.because("the \(L.kind) backend cannot start here: \(error)") }
            throw error
        }
    }

    /// Runs `loop` on this thread until `finish` is called (or the timeout hits).
    static func run<L: EventLoop>(_ loop: L, timeout: UInt64 = 60_000_000_000,
                                  _ body: (_ finish: @escaping () -> Void) -> Void) {
        var finished = false
        let finish = { finished = true; loop.stop() }
        loop.scheduleTimer(after: timeout) {
            if !finished { Issue.record("\(L.kind): timed out"); loop.stop() }
        }
        body(finish)
        loop.run()
    }

    /// Calls `check` every few ms until it returns true.
    static func poll<L: EventLoop>(_ loop: L, every ns: UInt64 = 2_000_000, _ check: @escaping () -> Bool) {
        func again() { loop.scheduleTimer(after: ns) { if !check() { again() } } }
        if !check() { again() }
    }
}
