import Testing
import Foundation
@testable import PeregrineIO
#if canImport(Glibc)
import Glibc
#endif

/// The io_uring loop at the end of a relay run: every client closes at once
/// while receives and stalled sends are still in the kernel. A cancelled
/// operation still produces its CQE later, so each callback must run exactly
/// once, every slot and descriptor must be given back, and the loop must keep
/// working afterwards.
@Suite("io_uring teardown", .enabled(if: BackendKind.testable.contains(.ioUring), "the io_uring backend cannot start here (see BackendAvailabilityTests)"),
       .timeLimit(.minutes(10)))
struct URingTeardownTests {
    /// Calls per operation, keyed by a name; the test asserts every count is 1.
    final class CallLog {
        var counts: [String: Int] = [:]
        var total = 0
        func note(_ name: String) { counts[name, default: 0] += 1; total += 1 }
    }

    @Test func closingEveryConnectionAtOnceWithOpsInFlight() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let n = 128
        // Larger than what loopback buffers absorb (send buffer autotunes to 4 MiB): the sends stall.
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 20, alignment: 16)
        big.initializeMemory(as: UInt8.self, repeating: 0x61)
        let small = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 2 * 64, alignment: 16)
        defer { big.deallocate(); small.deallocate() }
        func slice(_ i: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: small[(i * 64)..<(i * 64 + 64)])
        }
        // Slots held before the test: the eventfd wake-up read.
        let baselineSlots: Int? = h.await { loop, reply in reply(loop.slots.inUse) }
        let outcome: String? = h.await(30) { loop, reply in
            let log = CallLog()
            var servers: [Socket] = []
            var clients: [Socket] = []
            var fdsUsed: [Int32] = []
            var listener: Listener?
            var stalledAtClose = 0
            // Server side: a receive that never gets data and a 16 MiB send that
            // stalls (the client reads 64 bytes once); client side: that one receive.
            let expected = n * 3
            func closeEverything() {
                // The loadgen QUITs and the sink hangs up: all in the same turn.
                stalledAtClose = servers.indices.filter { log.counts["server-send-\($0)"] == nil }.count
                for s in servers { loop.close(s) }
                for c in clients { loop.close(c) }
                if let l = listener { loop.closeListener(l) }
            }
            var judging = false
            func check() {
                guard log.total >= expected, !judging else { return }
                judging = true
                judge(attempt: 0)
            }
            // After the last callback the cancel ops' own CQEs may still be due:
            // look again (bounded) until every descriptor has been given back.
            func judge(attempt: Int) {
                loop.scheduleTimer(after: 10_000_000) {
                    let repeated = log.counts.filter { $0.value != 1 }.map(\.key).sorted()
                    let leakedFDs = fdsUsed.filter { loop.state($0).pending != 0 || loop.state($0).closing }
                    let slotsInUse = loop.slots.inUse
                    if (!leakedFDs.isEmpty || slotsInUse != baselineSlots) && attempt < 300 {
                        judge(attempt: attempt + 1); return
                    }
                    reply("calls \(log.total) repeated \(repeated) leakedFDs \(leakedFDs.count) slots \(slotsInUse) "
                          + "sends in flight at close \(stalledAtClose == n ? "all" : "\(stalledAtClose)")")
                }
            }
            func arm(_ s: Socket, _ side: String, _ i: Int) {
                fdsUsed.append(s.fd)
                loop.receive(s, into: slice(side == "server" ? i : n + i)) { _ in log.note("\(side)-recv-\(i)"); check() }
                if side == "server" {
                    loop.send(s, UnsafeRawBufferPointer(big)) { _ in log.note("\(side)-send-\(i)"); check() }
                }
                if servers.count == n && clients.count == n {
                    // Both sides armed: the sends have filled the socket buffers by the next turn.
                    loop.scheduleTimer(after: 1_000_000) { closeEverything() }
                }
            }
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.41", port: 0)) { r in
                    guard case .success(let c) = r else { return }
                    servers.append(c.socket)
                    arm(c.socket, "server", servers.count - 1)
                }
                listener = l
                for _ in 0..<n {
                    loop.connect(to: l.address, from: nil, timeout: 5_000_000_000) { r in
                        guard case .success(let s) = r else { reply("connect: \(r)"); return }
                        clients.append(s)
                        arm(s, "client", clients.count - 1)
                    }
                }
            } catch { reply("\(error)") }
        }
        #expect(outcome == "calls \(n * 3) repeated [] leakedFDs 0 slots \(baselineSlots ?? -1) sends in flight at close all")

        // The loop still serves connections after the storm.
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
        defer { buf.deallocate() }
        let echoed: String? = h.await(10) { loop, reply in
            do {
                let l = try loop.listen(on: try SocketAddress(ip: "127.0.0.41", port: 0)) { r in
                    guard case .success(let c) = r else { return }
                    let pong = Array("pong".utf8)
                    pong.withUnsafeBytes { buf.copyMemory(from: $0) }
                    loop.send(c.socket, UnsafeRawBufferPointer(rebasing: buf[0..<4])) { _ in loop.close(c.socket) }
                }
                let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 16)
                loop.connect(to: l.address, from: nil, timeout: 5_000_000_000) { r in
                    guard case .success(let s) = r else { reply("connect: \(r)"); return }
                    loop.receive(s, into: UnsafeMutableRawBufferPointer(rebasing: back[4...])) { r in
                        let n = (try? r.get()) ?? -1
                        let text = n > 0 ? String(decoding: back[4..<(4 + n)], as: UTF8.self) : "\(r)"
                        loop.close(s)
                        loop.closeListener(l)
                        back.deallocate()
                        reply(text)
                    }
                }
            } catch { reply("\(error)") }
        }
        #expect(echoed == "pong")
    }

    /// io_uring_enter results: timeouts, signals and transient shortages are
    /// normal; anything else is reported, once per errno, and never stops the loop.
    @Test func unexpectedEnterErrorsAreReportedOncePerErrno() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let seen: [String]? = h.await { loop, reply in
            var lines: [String] = []
            loop.reportEnterError = { lines.append($0) }
            var reported: [Bool] = []
            for rc in [-ETIME, -EINTR, -EAGAIN, -EBUSY, 0, 5, -EBADF, -EBADF, -EEXIST, -EBADF] {
                reported.append(loop.noteEnterResult(Int32(rc), "test"))
            }
            reply(reported.map { $0 ? "y" : "n" } + lines.map { $0.contains("errno") ? "line" : $0 })
        }
        #expect(seen == ["n", "n", "n", "n", "n", "n", "y", "n", "y", "n", "line", "line"])
    }

    /// The spool deletes a drained segment (closeFile + unlink) while delivery
    /// reads of it may still be in the kernel: those reads complete with the
    /// data, and the descriptor is closed only after the last of them.
    @Test func closingAFileWithReadsInFlightLetsThemFinish() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let path = NSTemporaryDirectory() + "peregrine-uring-teardown-\(getpid()).dat"
        defer { unlink(path) }
        let size = 1 << 20, pieces = 8, piece = (1 << 20) / 8
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        for i in 0..<size { block[i] = UInt8(truncatingIfNeeded: i &* 13 &+ (i >> 9)) }
        let back = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { block.deallocate(); back.deallocate() }
        let result: String? = h.await { loop, reply in
            do {
                let f = try loop.openFile(path, create: true, truncate: true)
                loop.write(f, UnsafeRawBufferPointer(block), at: 0) { _ in }
                loop.fdatasync(f) { r in
                    guard case .success = r else { reply("fdatasync: \(r)"); return }
                    var results: [String] = []
                    for k in 0..<pieces {
                        let target = UnsafeMutableRawBufferPointer(rebasing: back[(k * piece)..<((k + 1) * piece)])
                        loop.read(f, into: target, at: Int64(k * piece)) { r in
                            results.append((try? r.get()).map { "\($0)" } ?? "\(r)")
                            guard results.count == pieces else { return }
                            let same = memcmp(back.baseAddress!, block.baseAddress!, size) == 0
                            // The last read gave the descriptor back before its callback ran.
                            let state = loop.state(f.fd)
                            reply("\(Set(results).sorted()) same \(same) closing \(state.closing) pending \(state.pending)")
                        }
                    }
                    // Same turn: the segment is dropped while all eight reads are queued.
                    loop.closeFile(f)
                    unlink(path)
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "[\"\(piece)\"] same true closing false pending 0")
    }
}
