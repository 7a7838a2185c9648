import Testing
import Foundation
import PeregrineTestSupport
import Synchronization
@testable import PeregrineIO

/// Dispatch-backend specifics (the shared behaviour is in the conformance
/// suite): a loop driven through `execute` from the test thread.
final class DispatchHarness: @unchecked Sendable {
    let loop: DispatchLoop
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        loop = try DispatchLoop()
        let loop = self.loop
        let finished = self.finished
        let t = Thread { loop.run(); finished.signal() }
        t.start()
    }

    /// Runs `body` on the loop; it calls `reply` once; waits up to `seconds`.
    func await<T>(_ seconds: Double = 10, _ body: @escaping (DispatchLoop, @escaping (T) -> Void) -> Void) -> T? {
        let box = ResultBox<T>()
        let sem = DispatchSemaphore(value: 0)
        let b = UncheckedBox(body)
        loop.execute { [loop] in
            b.value(loop) { v in
                box.set(v)
                sem.signal()
            }
        }
        guard sem.wait(timeout: .now() + seconds) == .success else { return nil }
        return box.get()
    }

    func stop() {
        loop.stop()
        _ = finished.wait(timeout: .now() + 5)
    }
}

final class ResultBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    func set(_ v: T) { lock.lock(); if value == nil { value = v }; lock.unlock() }
    func get() -> T? { lock.lock(); defer { lock.unlock() }; return value }
}

struct UncheckedBox<T>: @unchecked Sendable { let value: T; init(_ v: T) { value = v } }

@Suite("dispatch specifics", .enabled(if: BackendKind.testable.contains(.dispatch), "the dispatch backend cannot start here (see BackendAvailabilityTests)"),
       .timeLimit(.minutes(10)), .blockingIO)
struct DispatchSpecificTests {
    @Test func timersFireInOrderAndCancelledNeverFire() throws {
        let h = try DispatchHarness()
        defer { h.stop() }
        let order: [Int]? = h.await { loop, reply in
            var seen: [Int] = []
            var handles: [TimerHandle] = []
            for (i, ms) in [30, 10, 20, 10, 40].enumerated() {
                handles.append(loop.scheduleTimer(after: UInt64(ms) * 1_000_000) {
                    seen.append(i)
                    if i == 1 { loop.cancelTimer(handles[3]) } // same-batch cancel of an equal deadline
                })
            }
            let dead = loop.scheduleTimer(after: 5_000_000) { seen.append(99) }
            loop.cancelTimer(dead)
            loop.scheduleTimer(after: 60_000_000) { reply(seen) }
        }
        #expect(order == [1, 2, 0, 4])
    }

    @Test func echoAndCancelOnClose() throws {
        let h = try DispatchHarness()
        defer { h.stop() }
        let addr = try SocketAddress(ip: "127.0.0.1", port: 0)
        let count = 4 << 20
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        for i in 0..<count { payload[i] = UInt8(truncatingIfNeeded: i &* 7) }
        let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        let sbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { payload.deallocate(); sink.deallocate(); sbuf.deallocate() }
        let ok: Bool? = h.await(30) { loop, reply in
            do {
                // Server: echo everything back.
                var echo: ((Socket) -> Void)!
                echo = { s in
                    loop.receive(s, into: sbuf) { r in
                        guard case .success(let n) = r, n > 0 else { loop.close(s); return }
                        loop.send(s, UnsafeRawBufferPointer(rebasing: sbuf[0..<n])) { r in
                            if case .success = r { echo(s) } else { loop.close(s) }
                        }
                    }
                }
                let l = try loop.listen(on: addr) { r in if case .success(let c) = r { echo(c.socket) } }
                loop.connect(to: l.address, from: nil, timeout: 2_000_000_000) { r in
                    guard case .success(let c) = r else { reply(false); return }
                    let half = count / 2
                    loop.sendv(c, [UnsafeRawBufferPointer(rebasing: payload[0..<half]),
                                   UnsafeRawBufferPointer(rebasing: payload[half...])]) { _ in }
                    var got = 0
                    var pump: (() -> Void)!
                    pump = {
                        loop.receive(c, into: UnsafeMutableRawBufferPointer(rebasing: sink[got...])) { r in
                            guard case .success(let n) = r, n > 0 else { reply(false); return }
                            got += n
                            if got < count { pump(); return }
                            let same = memcmp(sink.baseAddress!, payload.baseAddress!, count) == 0
                            // A receive pending at close is cancelled exactly once.
                            var calls = 0
                            loop.receive(c, into: sbuf) { r in
                                calls += 1
                                if case .failure(let e) = r, e.isCancelled {} else { calls += 100 }
                            }
                            loop.close(c)
                            loop.closeListener(l)
                            loop.scheduleTimer(after: 20_000_000) { reply(same && calls == 1) }
                        }
                    }
                    pump()
                }
            } catch { reply(false) }
        }
        #expect(ok == true)
    }

    @Test func connectRefusedAndBoundSource() throws {
        let h = try DispatchHarness()
        defer { h.stop() }
        let result: String? = h.await { loop, reply in
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                    if case .success(let c) = r {
                        let peer = c.peer.ip
                        loop.close(c.socket)
                        loop.connect(to: try! SocketAddress(ip: "127.0.0.1", port: 1), from: nil, timeout: 1_000_000_000) { r in
                            switch r {
                            case .success: reply("connected?")
                            case .failure(let e): reply("\(peer) \(e.errnoValue == ECONNREFUSED)")
                            }
                        }
                    }
                }
                loop.connect(to: l.address, from: try SocketAddress(ip: "127.0.0.2", port: 0), timeout: 1_000_000_000) { r in
                    if case .success(let s) = r { loop.close(s) } else { reply("bound connect failed") }
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "127.0.0.2 true")
    }

    @Test func udpFilesAndHandoff() throws {
        let h = try DispatchHarness()
        defer { h.stop() }
        let path = NSTemporaryDirectory() + "peregrine-dispatch-\(getpid()).dat"
        defer { unlink(path) }
        let result: String? = h.await { loop, reply in
            do {
                let a = try loop.openUDP(boundTo: try SocketAddress(ip: "127.0.0.1", port: 0))
                let b = try loop.openUDP(boundTo: try SocketAddress(ip: "127.0.0.1", port: 0))
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 8)
                let msg: StaticString = "hello"
                loop.receiveDatagram(b, into: buf) { r in
                    guard case .success(let (n, from)) = r else { reply("udp recv failed"); return }
                    let ok = n == 5 && from == loop.localAddress(of: a)
                    loop.close(a); loop.close(b)
                    // Files: two writes, fdatasync, read back.
                    do {
                        let f = try loop.openFile(path, create: true, truncate: true)
                        loop.write(f, UnsafeRawBufferPointer(start: msg.utf8Start, count: 5), at: 0) { _ in }
                        loop.write(f, UnsafeRawBufferPointer(start: msg.utf8Start, count: 5), at: 5) { _ in }
                        loop.fdatasync(f) { r in
                            guard case .success = r else { reply("sync failed"); return }
                            loop.read(f, into: buf, at: 0) { r in
                                let text = (try? r.get()).map { String(decoding: buf[0..<$0], as: UTF8.self) }
                                loop.closeFile(f)
                                buf.deallocate()
                                reply("\(ok) \(text ?? "?")")
                            }
                        }
                    } catch { reply("\(error)") }
                }
                loop.sendDatagram(a, to: loop.localAddress(of: b)!, UnsafeRawBufferPointer(start: msg.utf8Start, count: 5)) { _ in }
            } catch { reply("\(error)") }
        }
        #expect(result == "true hellohello")

        // Hand-off from many threads, in order per thread.
        let counter = Mutex(0)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1000 { h.loop.execute { counter.withLock { $0 += 1 } } }
        }
        h.loop.execute { done.signal() }
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(counter.withLock { $0 } == 4000)
    }

    @Test func stopBeforeRunAndDeinitWithSuspendedSources() throws {
        let loop = try DispatchLoop()
        loop.stop()
        loop.run()  // returns at once
        // A loop with idle (suspended) sources can be released without trapping.
        let h = try DispatchHarness()
        let ok: Bool? = h.await { loop, reply in
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { _ in }
                loop.connect(to: l.address, from: nil, timeout: 1_000_000_000) { r in reply((try? r.get()) != nil) }
            } catch { reply(false) }
        }
        #expect(ok == true)
        h.stop()
    }

    @Test func peerClosesMidSendFailsEachSendOnce() throws {
        let h = try DispatchHarness()
        defer { h.stop() }
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 16)
        big.initializeMemory(as: UInt8.self, repeating: 0x41)
        defer { big.deallocate() }
        let result: String? = h.await(20) { loop, reply in
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                    if case .success(let c) = r {
                        loop.scheduleTimer(after: 10_000_000) { loop.close(c.socket) }
                    }
                }
                loop.connect(to: l.address, from: nil, timeout: 1_000_000_000) { r in
                    guard case .success(let s) = r else { reply("connect failed"); return }
                    var calls = [0, 0, 0]
                    var failures = 0
                    for i in 0..<3 {
                        loop.send(s, UnsafeRawBufferPointer(big)) { r in
                            calls[i] += 1
                            if case .failure = r {
                                failures += 1
                                loop.close(s)  // closing from inside a send callback
                            }
                            // Judged when the third callback has come (an event, not a
                            // wait), one loop turn later so a second call of any send shows.
                            if calls.reduce(0, +) == 3 {
                                loop.scheduleTimer(after: 0) {
                                    loop.closeListener(l)
                                    reply("\(calls) \(failures == 3)")
                                }
                            }
                        }
                    }
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "[1, 1, 1] true")
    }

    @Test func fiveHundredConnections() throws {
        // ~1,000 descriptors: the one budget every descriptor-heavy test shares.
        try DescriptorBudget.exclusive {
            let h = try DispatchHarness()
            defer { h.stop() }
            let n = 500
            let result: Int? = h.await(30) { loop, reply in
                do {
                    var echoed = 0
                    let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                        guard case .success(let c) = r else { return }
                        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
                        loop.receive(c.socket, into: buf) { r in
                            guard case .success(let k) = r, k > 0 else { loop.close(c.socket); return }
                            loop.send(c.socket, UnsafeRawBufferPointer(rebasing: buf[0..<k])) { _ in loop.close(c.socket) }
                        }
                    }
                    for _ in 0..<n {
                        loop.connect(to: l.address, from: nil, timeout: 5_000_000_000) { r in
                            guard case .success(let s) = r else { return }
                            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
                            buf[0] = 7
                            loop.send(s, UnsafeRawBufferPointer(rebasing: buf[0..<1])) { _ in }
                            loop.receive(s, into: buf) { r in
                                if case .success(1) = r { echoed += 1 }
                                loop.close(s)
                                if echoed == n { loop.closeListener(l); reply(echoed) }
                            }
                        }
                    }
                } catch { reply(-1) }
            }
            #expect(result == n)
        }
    }
}
