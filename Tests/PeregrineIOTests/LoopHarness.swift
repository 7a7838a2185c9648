import Foundation
import Synchronization
import Testing
import PeregrineIO
#if canImport(Glibc)
import Glibc
#endif

/// A value shared between the loop thread and the test thread. The test
/// thread reads it only after the loop has stopped (happens-before through
/// the harness's semaphores).
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// Heap bytes whose lifetime follows the closures that capture them, so a
/// buffer handed to a loop lives until the operation's callback is gone.
final class Bytes: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer
    init(count: Int, pattern: Bool = false) {
        buffer = .allocate(byteCount: max(count, 1), alignment: 16)
        if pattern {
            for i in 0..<count { buffer[i] = UInt8(truncatingIfNeeded: i &* 7 &+ (i >> 11)) }
        } else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
    init(_ text: String) {
        let utf8 = Array(text.utf8)
        buffer = .allocate(byteCount: max(utf8.count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.copyBytes(from: utf8)
        count = utf8.count
    }
    private(set) lazy var count: Int = buffer.count
    var raw: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[0..<count]) }
    func slice(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: buffer[range]) }
    func string(_ n: Int) -> String { String(decoding: buffer[0..<n], as: UTF8.self) }
    deinit { buffer.deallocate() }
}

/// Records the first failure seen on the loop thread; the test asserts on it.
final class Failures: @unchecked Sendable {
    private(set) var messages: [String] = []
    func add(_ text: String) { if messages.count < 20 { messages.append(text) } }
    var isEmpty: Bool { messages.isEmpty }
}

/// Carries the loop and the body across `execute` (a @Sendable closure);
/// both are only ever touched on the loop's thread.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
}

/// Starts a loop of a given backend on its own thread, runs a closure on it,
/// and waits with a bounded timeout: never hangs the test runner.
enum LoopHarness {
    /// Raises RLIMIT_NOFILE to its hard limit (500 concurrent connections need ~1000 fds).
    static let raisedFileLimit: Void = {
        var limit = rlimit()
        if getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = min(limit.rlim_max, 65536)
            _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
        }
    }()

    /// Creates a loop of type `L`, runs it on a new thread, hands `body` to it
    /// with `execute`, and waits until `body` (or a callback) calls `finish`.
    /// On timeout an Issue is recorded and the loop is stopped. Returns true
    /// when `finish` was called in time.
    @discardableResult
    static func run<L: EventLoop>(_ type: L.Type, timeout: Double = 10,
                                  sourceLocation: SourceLocation = #_sourceLocation,
                                  _ body: @escaping (L, _ finish: @escaping () -> Void) -> Void) -> Bool {
        _ = raisedFileLimit
        let loop: L
        do {
            loop = try L()
        } catch {
            Issue.record("\(L.kind): cannot create the loop: \(error)", sourceLocation: sourceLocation)
            return false
        }
        let finished = DispatchSemaphore(value: 0)
        let once = Atomic<Bool>(false)
        let exited = DispatchSemaphore(value: 0)
        let carried = Unchecked(value: loop)
        let thread = Thread {
            carried.value.run()
            exited.signal()
        }
        thread.name = "loop-\(L.kind)"
        thread.stackSize = 8 << 20
        thread.start()
        let work = Unchecked(value: body)
        loop.execute {
            work.value(carried.value) {
                if !once.exchange(true, ordering: .acquiringAndReleasing) { finished.signal() }
            }
        }
        let ok = finished.wait(timeout: .now() + timeout) == .success
        if !ok {
            Issue.record("\(L.kind): timed out after \(timeout) s", sourceLocation: sourceLocation)
        }
        loop.stop()
        if exited.wait(timeout: .now() + 5) == .timedOut {
            Issue.record("\(L.kind): the loop did not return from run() after stop()", sourceLocation: sourceLocation)
            // Keep it alive: freeing a loop that is still running would crash the runner.
            _ = Unmanaged.passRetained(loop)
        }
        return ok
    }
}

let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

extension SocketAddress {
    static func loopback(_ ip: String = "127.0.0.1", port: UInt16 = 0) -> SocketAddress {
        // Test-only constants: a literal numeric address always parses.
        (try? SocketAddress(ip: ip, port: port)) ?? .v4(sockaddr_in())
    }
}

let seconds: UInt64 = 1_000_000_000
let milliseconds: UInt64 = 1_000_000
