#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import CLinux

/// N event loops, each created on and run by a thread of its own: the one
/// way the daemon and the sink start their loops. A loop is made on the
/// thread that runs it (io_uring's single-issuer ring belongs to that
/// thread); `init` returns once every loop exists and its thread is in (or
/// about to enter) `run()`, so work handed in with `execute` runs at once.
/// Threads are named `NAME-INDEX` (Linux keeps 15 bytes of a name).
public final class LoopGroup<Loop: EventLoop>: @unchecked Sendable {
    public let loops: [Loop]
    private var threads: [pthread_t]
    private let joinLock = Locked<Bool>(false)

    /// Starts `count` loops. `onReturn(index)` runs on a loop's thread when
    /// its `run()` returns (expected after `stop()`; before that, the
    /// backend gave up). Throws, with every loop that did start stopped and
    /// joined, when any loop cannot be created.
    public init(count: Int, name: String, onReturn: @escaping @Sendable (Int) -> Void = { _ in }) throws(LoopGroupError) {
        let created = Locked([Loop?](repeating: nil, count: count))
        let failures = Locked<[String]>([])
        let ready = DispatchSemaphore(value: 0)
        var threads: [pthread_t] = []
        for i in 0..<count {
            let started = startThread(name: "\(name)-\(i)") {
                let loop: Loop
                do { loop = try Loop() } catch {
                    failures.withLock { $0.append("loop \(i): \(error)") }
                    ready.signal()
                    return
                }
                created.withLock { $0[i] = loop }
                ready.signal()
                loop.run()
                onReturn(i)
            }
            switch started {
            case .success(let t): threads.append(t)
            case .failure(let e):
                failures.withLock { $0.append("loop \(i): \(e)") }
                ready.signal()
            }
        }
        for _ in 0..<count { ready.wait() }
        let loops = created.withLock { $0 }
        let errors = failures.withLock { $0 }
        guard errors.isEmpty else {
            for l in loops { l?.stop() }
            for t in threads { pthread_join(t, nil) }
            throw LoopGroupError(backend: Loop.kind, failures: errors)
        }
        self.loops = loops.compactMap { $0 }
        self.threads = threads
    }

    /// Asks every loop to return from `run()`. Thread-safe.
    public func stop() {
        for l in loops { l.stop() }
    }

    /// Waits until every loop's thread has finished (its `onReturn` ran).
    /// Call from a thread outside the group; later calls return at once.
    public func join() {
        let first = joinLock.withLock { joined -> Bool in
            defer { joined = true }
            return !joined
        }
        guard first else { return }
        for t in threads { pthread_join(t, nil) }
    }
}

public struct LoopGroupError: Error, CustomStringConvertible {
    public var backend: BackendKind
    public var failures: [String]
    public var description: String { "cannot start the \(backend) backend: \(failures.joined(separator: "; "))" }
}

/// Starts a joinable thread running `body` (8 MiB of stack, glibc's usual default,
/// said explicitly so that a smaller `ulimit -s` does not shrink the loops').
func startThread(name: String, _ body: @escaping () -> Void) -> Result<pthread_t, IOError> {
    final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) { self.name = name; self.body = body }
    }
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    pthread_attr_setstacksize(&attr, 8 << 20)
    let context = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, &attr, { raw in
        guard let raw else { return nil }
        let start = Unmanaged<Start>.fromOpaque(raw).takeRetainedValue()
        // Linux refuses names over 15 bytes (ERANGE) rather than cutting them.
        _ = pthread_setname_np(pthread_self(), String(decoding: Array(start.name.utf8.prefix(15)), as: UTF8.self))
        start.body()
        return nil
    }, context)
    guard rc == 0 else {
        Unmanaged<Start>.fromOpaque(context).release()
        return .failure(IOError(.errno(rc), "pthread_create"))
    }
    return .success(thread)
}
