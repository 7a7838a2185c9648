import Testing
import PeregrineIO

/// Runs a body once per backend whose loop can be created. A backend whose
/// init still throws "not built yet" (a stub) is skipped; any other init
/// failure is a test failure.
protocol SpoolLoopVisitor {
    func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws
}

enum SpoolLoops {
    static func forEachBackend(_ visitor: some SpoolLoopVisitor) throws {
        for kind in BackendKind.allCases {
            try open(kind.loopType, kind: kind, visitor)
        }
    }

    private static func open<L: EventLoop>(_ type: L.Type, kind: BackendKind, _ visitor: some SpoolLoopVisitor) throws {
        try visitor.visit(type, kind: kind)
    }

    /// Makes a loop, or nil (skip) if the backend is still a stub.
    static func makeLoop<L: EventLoop>(_ type: L.Type) -> L? {
        do { return try L() } catch {
            if "\(error)".contains("not built yet") {
                print("spool tests: \(L.kind) backend not built yet, skipped")
                return nil
            }
            Issue.record("\(L.kind): loop init failed: \(error)")
            return nil
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
