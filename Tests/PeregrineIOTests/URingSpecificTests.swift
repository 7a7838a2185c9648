import Testing
import Foundation
import PeregrineTestSupport
import Synchronization
import CURing
@testable import PeregrineIO

/// io_uring-backend specifics (the shared behaviour is in the conformance
/// suite): setup flags, fsync ordering under many in-flight writes,
/// cancellation by close, linked connect timeouts, multishot accept re-use.
final class URingHarness: @unchecked Sendable {
    let loop: URingLoop
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        loop = try makeURingLoop()
        let loop = self.loop
        let finished = self.finished
        let t = Thread { loop.run(); finished.signal() }
        t.start()
    }

    /// Runs `body` on the loop; it calls `reply` once; waits up to `seconds`.
    func await<T>(_ seconds: Double = 10, _ body: @escaping (URingLoop, @escaping (T) -> Void) -> Void) -> T? {
        let box = URingResultBox<T>()
        let sem = DispatchSemaphore(value: 0)
        let b = URingUnchecked(body)
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

final class URingResultBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    func set(_ v: T) { lock.lock(); if value == nil { value = v }; lock.unlock() }
    func get() -> T? { lock.lock(); defer { lock.unlock() }; return value }
}

/// An io_uring loop, or a skip with the kernel's reason when io_uring cannot
/// start here (old kernel, seccomp): the suite is then reported as skipped.
func makeURingLoop() throws -> URingLoop {
    do { return try URingLoop() } catch {
        if case .unsupported = error.kind { try Skip.because("the io_uring backend cannot start here: \(error)") }
        throw error
    }
}

struct URingUnchecked<T>: @unchecked Sendable { let value: T; init(_ v: T) { value = v } }

@Suite("io_uring specifics", .enabled(if: BackendKind.testable.contains(.ioUring), "the io_uring backend cannot start here (see BackendAvailabilityTests)"),
       .timeLimit(.minutes(10)), .blockingIO)
struct URingSpecificTests {
    @Test func setupUsesDeferTaskrunOnThisKernel() throws {
        // DEFER_TASKRUN needs Linux 6.1: an older kernel is a skip with the reason, not a failure.
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let version = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        if version.count == 2, (version[0], version[1]) < (6, 1) {
            try Skip.because("kernel \(release) is older than 6.1: io_uring has no DEFER_TASKRUN here")
        }
        let loop = try makeURingLoop()
        // Linux >= 6.1 accepts SINGLE_ISSUER | DEFER_TASKRUN; older kernels fall back.
        #expect(loop.setupFlags & PEREGRINE_IORING_SETUP_DEFER_TASKRUN != 0)
        loop.stop()
        loop.run()   // returns at once: stop before run is honoured
    }

    @Test func timersFireInOrderAndCancelledNeverFire() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let order: [Int]? = h.await { loop, reply in
            var seen: [Int] = []
            var handles: [TimerHandle] = []
            for (i, ms) in [30, 10, 20, 10, 40].enumerated() {
                handles.append(loop.scheduleTimer(after: UInt64(ms) * 1_000_000) {
                    seen.append(i)
                    if i == 1 { loop.cancelTimer(handles[3]) }   // same-batch cancel
                })
            }
            let dead = loop.scheduleTimer(after: 5_000_000) { seen.append(99) }
            loop.cancelTimer(dead)
            loop.scheduleTimer(after: 60_000_000) { reply(seen) }
        }
        #expect(order == [1, 2, 0, 4])
    }

    @Test func echo4MiBWithSendvAndCancelOnClose() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let addr = try SocketAddress(ip: "127.0.0.1", port: 0)
        let count = 4 << 20
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        for i in 0..<count { payload[i] = UInt8(truncatingIfNeeded: i &* 7) }
        let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        let sbuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { payload.deallocate(); sink.deallocate(); sbuf.deallocate() }
        let ok: String? = h.await(30) { loop, reply in
            do {
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
                    guard case .success(let c) = r else { reply("connect: \(r)"); return }
                    // Many small pieces: forces partial sendmsg and iovec trimming.
                    var pieces: [UnsafeRawBufferPointer] = []
                    var at = 0
                    var size = 1
                    while at < count {
                        let n = min(size, count - at)
                        pieces.append(UnsafeRawBufferPointer(rebasing: payload[at..<(at + n)]))
                        at += n
                        size = size % 70_000 + 4093
                    }
                    var sent = false
                    var finishTest: (() -> Void)? = nil
                    // An op still outstanding at close reports .cancelled even if the
                    // kernel finished it, so close only after the sendv callback ran.
                    loop.sendv(c, pieces) { r in sent = (try? r.get()) != nil; finishTest?() }
                    var got = 0
                    var pump: (() -> Void)!
                    pump = {
                        loop.receive(c, into: UnsafeMutableRawBufferPointer(rebasing: sink[got...])) { r in
                            guard case .success(let n) = r, n > 0 else { reply("receive after \(got): \(r)"); return }
                            got += n
                            if got < count { pump(); return }
                            let same = memcmp(sink.baseAddress!, payload.baseAddress!, count) == 0
                            finishTest = {
                                finishTest = nil
                                var calls = 0
                                // The verdict waits for the cancelled receive's callback (a loaded
                                // machine delivered it after the fixed 20 ms the test used to wait),
                                // then 20 ms more for a second call; 10 s without one reports calls 0.
                                loop.receive(c, into: sbuf) { r in
                                    calls += 1
                                    if case .failure(let e) = r, e.isCancelled {} else { calls += 100 }
                                    if calls == 1 || calls == 101 {
                                        loop.scheduleTimer(after: 20_000_000) { reply("same \(same) sent \(sent) calls \(calls)") }
                                    }
                                }
                                loop.close(c)
                                loop.closeListener(l)
                                loop.scheduleTimer(after: 10_000_000_000) { reply("same \(same) sent \(sent) calls \(calls)") }
                            }
                            if sent { finishTest?() }
                        }
                    }
                    pump()
                }
            } catch { reply("\(error)") }
        }
        #expect(ok == "same true sent true calls 1")
    }

    @Test func connectRefusedBoundSourceAndTimeout() throws {
        let h = try URingHarness()
        defer { h.stop() }
        // A port that refuses by construction: bound here (so nobody else can
        // listen on it) and never listening. Port 1 was only assumed closed.
        let closed = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(closed) }
        var closedAddress = sockaddr_in()
        closedAddress.sin_family = sa_family_t(AF_INET)
        closedAddress.sin_addr.s_addr = inet_addr("127.0.0.1")
        var closedLength = socklen_t(MemoryLayout<sockaddr_in>.size)
        try #require(withUnsafeMutablePointer(to: &closedAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(closed, $0, closedLength) == 0 && getsockname(closed, $0, &closedLength) == 0 }
        })
        let closedPort = UInt16(bigEndian: closedAddress.sin_port)
        let result: String? = h.await { loop, reply in
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                    guard case .success(let c) = r else { return }
                    let peer = c.peer.ip
                    loop.close(c.socket)
                    loop.connect(to: try! SocketAddress(ip: "127.0.0.1", port: closedPort), from: nil, timeout: 1_000_000_000) { r in
                        switch r {
                        case .success: reply("connected?")
                        case .failure(let e): reply("\(peer) \(e.errnoValue == ECONNREFUSED)")
                        }
                    }
                }
                loop.connect(to: l.address, from: try SocketAddress(ip: "127.0.0.2", port: 0), timeout: 1_000_000_000) { r in
                    if case .success(let s) = r { loop.close(s) } else { reply("bound connect failed") }
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "127.0.0.2 true")

        // A listener whose accept queue is full drops SYNs: connects time out.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        #expect(listen(fd, 0) == 0)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let port = UInt16(bigEndian: sa.sin_port)
        let outcomes: [String]? = h.await(10) { loop, reply in
            var results: [String] = []
            let n = 6
            for _ in 0..<n {
                loop.connect(to: try! SocketAddress(ip: "127.0.0.1", port: port), from: nil, timeout: 300_000_000) { r in
                    switch r {
                    case .success(let s): results.append("ok"); loop.close(s)
                    case .failure(let e): results.append(e.kind == .timedOut ? "timeout" : "\(e)")
                    }
                    if results.count == n { reply(results) }
                }
            }
        }
        #expect(outcomes?.contains("timeout") == true)
        #expect(outcomes?.allSatisfy { $0 == "ok" || $0 == "timeout" } == true)
    }

    @Test func udpFilesFsyncOrderingAndHandoff() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let path = NSTemporaryDirectory() + "peregrine-uring-\(getpid()).dat"
        defer { unlink(path) }
        let result: String? = h.await { loop, reply in
            do {
                let a = try loop.openUDP(boundTo: try SocketAddress(ip: "127.0.0.1", port: 0))
                let b = try loop.openUDP(boundTo: try SocketAddress(ip: "127.0.0.1", port: 0))
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
                let msg: StaticString = "hello"
                loop.receiveDatagram(b, into: buf) { r in
                    guard case .success(let (n, from)) = r else { reply("udp recv failed"); return }
                    let ok = n == 5 && from == loop.localAddress(of: a)
                    loop.close(a); loop.close(b)
                    do {
                        // 256 writes in flight, then fdatasync: it must complete after all of them.
                        let f = try loop.openFile(path, create: true, truncate: true)
                        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                        for i in 0..<4096 { block[i] = UInt8(truncatingIfNeeded: i) }
                        var written = 0
                        for i in 0..<256 {
                            loop.write(f, UnsafeRawBufferPointer(block), at: Int64(i * 4096)) { r in
                                if case .success = r { written += 1 }
                            }
                        }
                        loop.fdatasync(f) { r in
                            guard case .success = r, written == 256 else { reply("sync before writes: \(written)"); return }
                            loop.read(f, into: buf, at: 0) { r in
                                let n = (try? r.get()) ?? -1
                                let same = n == 1 << 20 && (0..<256).allSatisfy {
                                    memcmp(buf.baseAddress! + $0 * 4096, block.baseAddress!, 4096) == 0
                                }
                                loop.closeFile(f)
                                buf.deallocate(); block.deallocate()
                                reply("\(ok) \(same)")
                            }
                        }
                    } catch { reply("\(error)") }
                }
                loop.sendDatagram(a, to: loop.localAddress(of: b)!, UnsafeRawBufferPointer(start: msg.utf8Start, count: 5)) { _ in }
            } catch { reply("\(error)") }
        }
        #expect(result == "true true")

        let counter = Mutex(0)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1000 { h.loop.execute { counter.withLock { $0 += 1 } } }
        }
        h.loop.execute { done.signal() }
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(counter.withLock { $0 } == 4000)
    }

    @Test func fiveHundredConnectionsThroughMultishotAccept() throws {
        // ~1,000 descriptors: the one budget every descriptor-heavy test shares.
        try DescriptorBudget.exclusive {
            let h = try URingHarness()
            defer { h.stop() }
            let n = 500
            let served: Int? = h.await(30) { loop, reply in
                do {
                    var accepted = 0
                    var finished = 0
                    let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                        guard case .success(let c) = r else { return }
                        accepted += 1
                        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                        loop.receive(c.socket, into: buf) { r in
                            let k = (try? r.get()) ?? 0
                            loop.send(c.socket, UnsafeRawBufferPointer(rebasing: buf[0..<k])) { _ in
                                loop.close(c.socket); buf.deallocate()
                            }
                        }
                    }
                    for i in 0..<n {
                        loop.connect(to: l.address, from: nil, timeout: 5_000_000_000) { r in
                            guard case .success(let s) = r else { finished += 1; return }
                            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                            out.storeBytes(of: UInt64(i), as: UInt64.self)
                            let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                            loop.send(s, UnsafeRawBufferPointer(out)) { _ in }
                            loop.receive(s, into: back) { r in
                                let good = (try? r.get()) == 8 && back.load(as: UInt64.self) == UInt64(i)
                                loop.close(s); out.deallocate(); back.deallocate()
                                finished += 1
                                if good { accepted += 0 } else { finished += 10_000 }
                                if finished >= n {
                                    loop.closeListener(l)
                                    reply(finished == n ? accepted : -finished)
                                }
                            }
                        }
                    }
                } catch { reply(-1) }
            }
            #expect(served == n)
        }
    }

    @Test func closeWithPendingSendAndReceiveCallsEachOnce() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 20, alignment: 16)
        let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
        defer { big.deallocate(); small.deallocate() }
        let calls: [String]? = h.await { loop, reply in
            do {
                var server: Socket?
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                    if case .success(let c) = r { server = c.socket }   // never reads: the send stalls
                }
                loop.connect(to: l.address, from: nil, timeout: 1_000_000_000) { r in
                    guard case .success(let s) = r else { reply(["connect"]); return }
                    var log: [String] = []
                    // Judged when both callbacks have come (events, not a wait), one
                    // loop turn later so a second call of either shows.
                    func note(_ what: String) {
                        log.append(what)
                        guard log.count == 2 else { return }
                        loop.scheduleTimer(after: 0) {
                            if let server { loop.close(server) }
                            loop.closeListener(l)
                            reply(log.sorted())
                        }
                    }
                    loop.send(s, UnsafeRawBufferPointer(big)) { r in
                        note((try? r.get()) == nil ? "send-failed" : "send-ok")
                    }
                    loop.receive(s, into: small) { r in
                        if case .failure(let e) = r, e.isCancelled { note("recv-cancelled") } else { note("recv-other") }
                    }
                    // 64 MiB to a peer that never reads cannot complete: close with both
                    // operations pending, on the next loop turn (after their submission).
                    loop.scheduleTimer(after: 0) { loop.close(s) }
                }
            } catch { reply(["\(error)"]) }
        }
        #expect(calls == ["recv-cancelled", "send-failed"])
    }
}
