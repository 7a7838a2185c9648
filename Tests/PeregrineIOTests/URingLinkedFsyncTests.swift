import Testing
import Foundation
import PeregrineTestSupport
@testable import PeregrineIO

/// The spool's group commit on io_uring: one buffer written, then
/// fdatasync. The fsync SQE is linked (IOSQE_IO_LINK) behind the write and
/// submitted with it; when the write fails or is cut short the link cancels
/// the fsync, which must then wait for the file's writes and still run,
/// never report a cancellation the caller did not ask for.
@Suite("io_uring linked write and fdatasync",
       .enabled(if: BackendKind.testable.contains(.ioUring), "the io_uring backend cannot start here (see BackendAvailabilityTests)"))
struct URingLinkedFsyncTests {
    private static func tempPath(_ name: String) -> String {
        NSTemporaryDirectory() + "peregrine-uring-link-\(name)-\(getpid()).dat"
    }

    @Test func fdatasyncRightAfterOneWriteIsLinkedAndCoversIt() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let path = Self.tempPath("one")
        defer { unlink(path) }
        let result: String? = h.await { loop, reply in
            do {
                loop.linksFsyncToWrite = true // off by default (PEREGRINE_URING_FSYNC_LINK=1)
                let f = try loop.openFile(path, create: true, truncate: true)
                let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
                for i in 0..<8192 { block[i] = UInt8(truncatingIfNeeded: i &* 7) }
                let before = loop.linkedFsyncs
                var events: [String] = []
                loop.write(f, UnsafeRawBufferPointer(rebasing: block[0..<4096]), at: 0) { r in
                    events.append((try? r.get()) != nil ? "write" : "write failed")
                }
                loop.fdatasync(f) { r in
                    events.append((try? r.get()) != nil ? "sync" : "sync failed: \(r)")
                    let linked = loop.linkedFsyncs - before
                    // Two writes in flight: the fsync cannot ride behind one of them, it waits.
                    loop.write(f, UnsafeRawBufferPointer(rebasing: block[4096..<6144]), at: 4096) { _ in events.append("w2") }
                    loop.write(f, UnsafeRawBufferPointer(rebasing: block[6144..<8192]), at: 6144) { _ in events.append("w3") }
                    loop.fdatasync(f) { r in
                        events.append((try? r.get()) != nil ? "sync2" : "sync2 failed")
                        let unlinked = loop.linkedFsyncs - before - linked
                        let back = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
                        loop.read(f, into: back, at: 0) { r in
                            let same = (try? r.get()) == 8192 && memcmp(back.baseAddress!, block.baseAddress!, 8192) == 0
                            loop.closeFile(f)
                            back.deallocate(); block.deallocate()
                            reply("\(events.joined(separator: ",")) linked=\(linked) then=\(unlinked) same=\(same)")
                        }
                    }
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "write,sync,w2,w3,sync2 linked=1 then=0 same=true")
    }

    @Test func linkedFdatasyncStillRunsWhenItsWriteFails() throws {
        let h = try URingHarness()
        defer { h.stop() }
        let path = Self.tempPath("fail")
        defer { unlink(path) }
        let result: String? = h.await { loop, reply in
            do {
                loop.linksFsyncToWrite = true
                let f = try loop.openFile(path, create: true, truncate: true)
                let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                block.initializeMemory(as: UInt8.self, repeating: 1)
                let before = loop.linkedFsyncs
                var events: [String] = []
                // Past the largest file size any Linux file system allows: EFBIG (or EINVAL).
                loop.write(f, UnsafeRawBufferPointer(block), at: Int64(1) << 62) { r in
                    if case .failure(let e) = r, e.kind != .cancelled { events.append("write failed") } else { events.append("write: \(r)") }
                }
                loop.fdatasync(f) { r in
                    // The link cancelled the fsync when its write failed; it must be submitted again,
                    // and report the fsync's own result (success), not that cancellation.
                    events.append((try? r.get()) != nil ? "sync" : "sync: \(r)")
                    loop.closeFile(f)
                    block.deallocate()
                    reply("\(events.joined(separator: ",")) linked=\(loop.linkedFsyncs - before)")
                }
            } catch { reply("\(error)") }
        }
        #expect(result == "write failed,sync linked=1")
    }
}
