import Testing
import Foundation
import PeregrineTestSupport
import Synchronization
@testable import PeregrineIO

/// An io_uring loop whose rings are far too small for its load (issue 12
/// item 9: "CQ overflow, -EBUSY from io_uring_submit"): a 4-entry SQ and an
/// 8-entry CQ under 300 concurrent echo connections, so the SQ fills inside
/// every turn (early flushes) and completions overflow the CQ. The loop must
/// not stop or trap: every operation's callback runs exactly once (success,
/// or an error such as the SQ-full EBUSY), the echoes that succeed carry the
/// right bytes, and afterwards the loop still takes work from another thread
/// (its wake-up read stays armed) and stops when asked.
@Suite(.enabled(if: BackendKind.testable.contains(.ioUring), "the io_uring backend cannot start here (see BackendAvailabilityTests)"),
       .timeLimit(.minutes(5)), .blockingIO)
struct URingRingPressureTests {
    @Test func tinyRingsUnderThreeHundredConnections() throws {
        try DescriptorBudget.exclusive {
            let loop: URingLoop
            do { loop = try URingLoop(ringEntries: 4, cqEntries: 8) } catch let error as IOError {
                if case .unsupported = error.kind { try Skip.because("io_uring cannot start here: \(error)") }
                throw error
            }
            let returned = DispatchSemaphore(value: 0)
            let unchecked = URingUnchecked(loop)
            Thread { unchecked.value.run(); returned.signal() }.start()
            let n = 300
            struct Tally { var ok = 0, failed = 0, wrong = 0, calls = 0; var errors: Set<String> = [] }
            let tally = Mutex(Tally())
            let done = DispatchSemaphore(value: 0)
            loop.execute {
                let l: Listener
                do {
                    l = try loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { r in
                        guard case .success(let c) = r else { return }
                        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                        loop.receive(c.socket, into: buf) { r in
                            let k = (try? r.get()) ?? 0
                            loop.send(c.socket, UnsafeRawBufferPointer(rebasing: buf[0..<k])) { _ in
                                loop.close(c.socket); buf.deallocate()
                            }
                        }
                    }
                } catch { tally.withLock { $0.errors.insert("listen: \(error)") }; done.signal(); return }
                var finished = 0
                func finish(_ outcome: Result<Bool, IOError>) {
                    tally.withLock { t in
                        t.calls += 1
                        switch outcome {
                        case .success(true): t.ok += 1
                        case .success(false): t.wrong += 1
                        case .failure(let e): t.failed += 1; t.errors.insert("\(e)")
                        }
                    }
                    finished += 1
                    if finished == n { loop.closeListener(l); done.signal() }
                }
                for i in 0..<n {
                    loop.connect(to: l.address, from: nil, timeout: 20_000_000_000) { r in
                        guard case .success(let s) = r else {
                            if case .failure(let e) = r { finish(.failure(e)) }
                            return
                        }
                        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                        out.storeBytes(of: UInt64(i), as: UInt64.self)
                        let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                        loop.send(s, UnsafeRawBufferPointer(out)) { _ in }
                        loop.receive(s, into: back) { r in
                            let outcome = r.map { $0 == 8 && back.load(as: UInt64.self) == UInt64(i) }
                            loop.close(s); out.deallocate(); back.deallocate()
                            finish(outcome)
                        }
                    }
                }
            }
            let finishedInTime = done.wait(timeout: .now() + 120) == .success
            let t = tally.withLock { $0 }
            #expect(finishedInTime, "not every connection's callbacks ran: \(t.calls) of \(n) (\(t.errors))")
            #expect(t.calls == n && t.ok + t.failed == n && t.wrong == 0, "ok \(t.ok) failed \(t.failed) wrong \(t.wrong): \(t.errors)")
            #expect(t.ok > 0, "no echo got through: \(t.errors)")
            // The loop still runs work handed in from another thread, then stops.
            let alive = DispatchSemaphore(value: 0)
            loop.execute { alive.signal() }
            #expect(alive.wait(timeout: .now() + 30) == .success, "the loop no longer takes work after the pressure")
            loop.stop()
            #expect(returned.wait(timeout: .now() + 30) == .success, "the loop did not stop")
            print("tiny rings: \(t.ok) echoed, \(t.failed) failed (\(t.errors.sorted().joined(separator: "; ")))")
        }
    }
}
