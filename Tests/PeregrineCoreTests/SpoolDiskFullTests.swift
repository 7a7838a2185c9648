#if canImport(Glibc)
import Glibc
#endif
import Testing
import PeregrineIO
@testable import PeregrineSpool

/// A small tmpfs to run out of space on (needs root and a sandbox that allows
/// mount; the tests are disabled, with this reason, where it does not).
struct SmallTmpfs {
    let path: String
    init?(kilobytes: Int, tag: String) {
        let dir = SpoolTempDir(tag)
        guard system("mount -t tmpfs -o size=\(kilobytes)k tmpfs '\(dir.path)' 2>/dev/null") == 0 else {
            dir.remove()
            return nil
        }
        path = dir.path
    }
    func remove() {
        _ = system("umount '\(path)' 2>/dev/null")
        _ = rmdir(path)
    }

    static let available: Bool = {
        guard geteuid() == 0, let t = SmallTmpfs(kilobytes: 64, tag: "tmpfs-probe") else { return false }
        t.remove()
        return true
    }()

    /// Fills the file system with one file until ENOSPC; returns its path.
    func fill() -> String {
        let filler = path + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let chunk = [UInt8](repeating: 0x46, count: 4096)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        return filler
    }
}

/// Disk full (issue #12 item 6): a write that fails with ENOSPC refuses the
/// message (the client's 451), the writer recovers by itself once space
/// returns, and an outcome recorded meanwhile is not lost (before the fix the
/// writer stayed off until restart and the delivered message came back).
@Suite(.serialized, .enabled(if: SmallTmpfs.available, "needs root and mount -t tmpfs (a small file system to fill)"))
struct SpoolDiskFullTests {
    @Test(arguments: BackendKind.testable) func diskFullThenSpaceReturns(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(L.self)
                guard let fs = SmallTmpfs(kilobytes: 1024, tag: "diskfull") else {
                    Issue.record("\(kind): tmpfs mount failed"); return
                }
                defer { fs.remove() }
                let dir = fs.path + "/loop-0"
                var options = SpoolWriterOptions(segmentSize: 256 << 10)
                options.bufferSize = 64 << 10
                options.retryFirstDelayNanoseconds = 10_000_000
                options.retryMaxDelayNanoseconds = 50_000_000
                let w = try SpoolWriter(loop: loop, directory: dir, options: options)
                let body = [UInt8](repeating: 0x42, count: 20_000)
                var delivered: MessageID?
                var refused: SpoolError?
                var healthWhileFull: SpoolHealth = .ok
                var pendingWhileFull = 0
                var afterwards: MessageID?
                var filler = ""
                SpoolLoops.run(loop) { finish in
                    func append(_ done: @escaping (MessageID?, SpoolError?) -> Void) {
                        var id: MessageID?
                        body.withUnsafeBytes { b in
                            id = w.append(envelope: SpoolFixtures.envelope(1), body: b) { r in
                                switch r {
                                case .success: done(id, nil)
                                case .failure(let e): done(nil, e)
                                }
                            }
                        }
                    }
                    append { id, _ in
                        delivered = id
                        filler = fs.fill()
                        // Until a message is refused: a page the segment already has may still take one.
                        func tryUntilRefused(_ left: Int) {
                            append { _, e in
                                if let e {
                                    refused = e
                                    healthWhileFull = w.health
                                    // Delivered meanwhile: must reach the disk once there is room.
                                    if let d = delivered { for r in 0 ..< 2 { w.recordOutcome(d, recipient: r, state: .delivered) } }
                                    pendingWhileFull = w.pendingOutcomeCount
                                    _ = unlink(filler)
                                    SpoolLoops.poll(loop) {
                                        guard w.health == .ok, w.pendingOutcomeCount == 0 else { return false }
                                        append { id, _ in afterwards = id; finish() }
                                        return true
                                    }
                                } else if left > 0 {
                                    tryUntilRefused(left - 1)
                                } else {
                                    Issue.record("\(kind): never refused on a full disk"); finish()
                                }
                            }
                        }
                        tryUntilRefused(100)
                    }
                }
                #expect(delivered != nil, "\(kind)")
                if case .loop(_, let e) = refused { #expect(e.errnoValue == ENOSPC, "\(kind): \(e)") }
                else { Issue.record("\(kind): refused with \(String(describing: refused))") }
                #expect(healthWhileFull.name == "degraded", "\(kind): \(healthWhileFull)")
                #expect(pendingWhileFull == 2, "\(kind)")
                #expect(afterwards != nil, "\(kind): no message accepted after space returned")
                #expect(w.stats.faults >= 1 && w.stats.recoveries >= 1, "\(kind)")

                // A restart finds the delivered message gone (its outcomes were written), the later one there.
                let r = try SpoolRecovery.recover(directory: dir, mode: .readOnly, log: { _ in }).get()
                #expect(r.problems.isEmpty, "\(kind): \(r.problems)")
                let ids = Set(r.messages.map(\.id))
                if let d = delivered { #expect(!ids.contains(d), "\(kind): the delivered message came back") }
                if let a = afterwards { #expect(ids.contains(a), "\(kind)") }
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

}

/// Write and sync faults on the simulated disk (no mount needed).
@Suite struct SpoolSimulatedFaultTests {
    /// On the simulated disk with armed faults: EIO on fdatasync (the
    /// kernel dropped the dirty pages), then ENOSPC on the retry's writes; an
    /// outcome recorded while degraded is durable after recovery, on the disk
    /// image that survives a power loss.
    @Test func syncErrorThenRetriesOnTheSimulatedDisk() throws {
        let disk = SimulatedSpoolDisk(seed: 42)
        var options = SpoolWriterOptions()
        options.retryFirstDelayNanoseconds = 1_000_000
        let dir = "/spool/loop-0"
        let w = try SpoolStreamWriter(io: disk, directory: dir, options: options)
        let body = [UInt8](repeating: 0x43, count: 3000)
        var first: MessageID?, failed: SpoolError?, later: MessageID?
        func append(_ done: @escaping (MessageID?, SpoolError?) -> Void) {
            var id: MessageID?
            body.withUnsafeBytes { b in
                id = w.append(envelope: SpoolFixtures.envelope(7), body: b) { r in
                    if case .failure(let e) = r { done(nil, e) } else { done(id, nil) }
                }
            }
        }
        append { id, _ in first = id }
        disk.run(until: { first != nil })
        disk.armedErrno = EIO
        disk.failNextSyncs = 1
        append { _, e in failed = e }
        disk.run(until: { failed != nil })
        #expect(w.health.name == "degraded")
        if let f = first { w.recordOutcome(f, recipient: 0, state: .delivered); w.recordOutcome(f, recipient: 1, state: .bounced) }
        #expect(w.pendingOutcomeCount == 2)
        disk.armedErrno = ENOSPC
        disk.failNextWrites = 3
        disk.run(until: { w.health == .ok && w.pendingOutcomeCount == 0 })
        #expect(w.health == .ok)
        #expect(w.stats.faults == 1 && w.stats.recoveries == 1)
        append { id, _ in later = id }
        disk.run(until: { later != nil })
        #expect(later != nil)
        let image = disk.powerLossImage(seed: 1)
        let r = try SpoolRecovery.recover(directory: dir, fileSystem: image, log: { _ in }).get()
        #expect(r.problems.isEmpty, "\(r.problems)")
        #expect(r.messages.map(\.id) == [later].compactMap { $0 })
    }

    /// At the limit of outcomes kept in memory: the ones over it are counted as
    /// dropped (their recipients come back after a restart: a duplicate, never
    /// a loss), the ones under it are written once the disk takes writes again.
    @Test func pendingOutcomesAtTheirLimit() throws {
        let disk = SimulatedSpoolDisk(seed: 7)
        var options = SpoolWriterOptions()
        options.retryFirstDelayNanoseconds = 1_000_000
        options.maxPendingOutcomes = 3
        let dir = "/spool/loop-0"
        let w = try SpoolStreamWriter(io: disk, directory: dir, options: options)
        var ids: [MessageID] = []
        var failed = false
        let body = [UInt8](repeating: 0x44, count: 500)
        for i in 0 ..< 5 {
            var id: MessageID?
            body.withUnsafeBytes { b in
                id = w.append(envelope: SpoolFixtures.envelope(i, recipients: 1), body: b) { r in
                    if case .success = r, let id { ids.append(id) }
                }
            }
        }
        disk.run(until: { ids.count == 5 })
        disk.failNextWrites = 1
        body.withUnsafeBytes { b in _ = w.append(envelope: SpoolFixtures.envelope(9, recipients: 1), body: b) { r in
            if case .failure = r { failed = true }
        } }
        disk.failNextSyncs = 1000  // stays degraded while the outcomes come in
        disk.run(until: { failed })
        #expect(w.health.name == "degraded")
        for id in ids { w.recordOutcome(id, recipient: 0, state: .delivered) }
        #expect(w.pendingOutcomeCount == 3)
        #expect(w.stats.outcomesDropped == 2)
        disk.failNextSyncs = 0
        disk.run(until: { w.health == .ok && w.pendingOutcomeCount == 0 })
        #expect(w.health == .ok)
        let r = try SpoolRecovery.recover(directory: dir, fileSystem: disk.powerLossImage(seed: 3), log: { _ in }).get()
        #expect(r.problems.isEmpty, "\(r.problems)")
        #expect(Set(r.messages.map(\.id)) == Set(ids.suffix(2)), "the two dropped outcomes' messages are redelivered")
    }
}
