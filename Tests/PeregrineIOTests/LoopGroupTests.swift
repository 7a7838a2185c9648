import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// LoopGroup, on every backend: the loops exist and run when `init`
/// returns, each on its own named thread; `stop` ends them, each reports its
/// return, and `join` waits for the threads.
@Suite("LoopGroupTests", .timeLimit(.minutes(2)), .blockingIO)
struct LoopGroupTests {
    @Test(arguments: conformanceBackends)
    func startsRunsStopsAndJoins(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        try check(kind.loopType)
    }

    private func check<L: EventLoop>(_ type: L.Type) throws {
        let returned = Locked<[Int]>([])
        let group = try LoopGroup<L>(count: 3, name: "lgtest") { i in returned.withLock { $0.append(i) } }
        #expect(group.loops.count == 3)
        // Each loop runs handed-in work on a thread of its own, named NAME-INDEX.
        let seen = Locked<[Int: (thread: pthread_t, name: String)]>([:])
        let done = DispatchSemaphore(value: 0)
        for (i, loop) in group.loops.enumerated() {
            loop.execute {
                var buffer = [CChar](repeating: 0, count: 32)
                pthread_getname_np(pthread_self(), &buffer, buffer.count)
                let name = String(cString: buffer)
                seen.withLock { $0[i] = (pthread_self(), name) }
                done.signal()
            }
        }
        for _ in 0..<3 { #expect(done.wait(timeout: .now() + 30) == .success) }
        let threads = seen.withLock { $0 }
        #expect(threads.count == 3)
        // Dispatch runs a loop's work on its serial queue's threads, not on the one in run().
        if L.kind != .dispatch {
            #expect(Set(threads.values.map(\.thread)).count == 3)
            for i in 0..<3 { #expect(threads[i]?.name == "lgtest-\(i)") }
        }
        #expect(returned.withLock { $0 }.isEmpty)
        group.stop()
        group.join()
        #expect(returned.withLock { $0 }.sorted() == [0, 1, 2])
        group.join() // a second join returns at once
    }
}
