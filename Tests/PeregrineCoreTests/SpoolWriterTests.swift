#if canImport(Glibc)
import Glibc
#endif
import Testing
import PeregrineIO
@testable import PeregrineSpool

@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct SpoolWriterTests {
    /// Appends `count` messages on each backend, records outcomes, and checks that
    /// recovery finds exactly the live ones, bodies intact.
    @Test(arguments: BackendKind.testable) func appendRecordOutcomesAndRecover(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(type)
                let tmp = SpoolTempDir("writer"); defer { tmp.remove() }
                let dir = tmp.path + "/loop-0"
                var opts = SpoolWriterOptions(segmentSize: 200_000)
                opts.compactionThreshold = 0  // this test looks at segments as written
                let w = try SpoolWriter(loop: loop, directory: dir, options: opts)
                let count = 1500
                var durable: [MessageID: MessageLocation] = [:]
                var ids: [MessageID] = []
                var bodies: [MessageID: [UInt8]] = [:]
                var failures = 0
                SpoolLoops.run(loop) { finish in
                    for i in 0..<count {
                        let probe = MessageID(hi: 0, lo: UInt64(i))
                        let body = SpoolTestBody.make(id: probe, size: SpoolTestBody.size(id: probe, nominal: 700))
                        let id = body.withUnsafeBytes { b in
                            w.append(envelope: SpoolFixtures.envelope(i, recipients: 3), body: b) { r in
                                switch r {
                                case .success: break
                                case .failure: failures += 1
                                }
                            }
                        }
                        ids.append(id); bodies[id] = body
                    }
                    w.flush { _ in
                        for id in ids { durable[id] = w.location(of: id) }
                        // Finish messages 0..<500 entirely, 500..<1000 partly.
                        for id in ids[0..<500] { for r in 0..<3 { w.recordOutcome(id, recipient: r, state: .delivered) } }
                        for id in ids[500..<1000] { w.recordOutcome(id, recipient: 1, state: .bounced) }
                        w.flush { _ in finish() }
                    }
                }
                #expect(failures == 0, "\(kind)")
                #expect(w.stats.fsyncs < count / 10, "\(kind): group commit should batch (\(w.stats.fsyncs) fsyncs)")
                let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                #expect(r.problems.isEmpty, "\(kind)")
                #expect(r.messages.map(\.id) == Array(ids[500...]), "\(kind)")
                for m in r.messages {
                    #expect(m.location == durable[m.id], "\(kind)")
                    let idx = ids.firstIndex(of: m.id) ?? -1
                    #expect(m.states[1] == (idx < 1000 ? .bounced : .pending))
                    #expect(m.states.pendingCount == (idx < 1000 ? 2 : 3))
                    let path = SpoolRecovery.segmentPath(directory: dir, number: m.location.segment)
                    #expect(SpoolRecoveryTests.bodyAt(path, m.location) == bodies[m.id], "\(kind)")
                }
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

    @Test(arguments: BackendKind.testable) func readBodyAfterDurable(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(type)
                let tmp = SpoolTempDir("read"); defer { tmp.remove() }
                let w = try SpoolWriter(loop: loop, directory: tmp.path + "/loop-0")
                let body = SpoolTestBody.make(id: MessageID(hi: 7, lo: 7), size: 150_000)  // larger than nothing pooled? no: bigger than a record fits in a partly used buffer
                var got: [UInt8] = []
                var tooSmall: SpoolError?
                SpoolLoops.run(loop) { finish in
                    _ = body.withUnsafeBytes { w.append(envelope: SpoolFixtures.envelope(1), body: $0) { _ in } }
                    let id = body.withUnsafeBytes { w.append(envelope: SpoolFixtures.envelope(2), body: $0) { _ in } }
                    w.flush { _ in
                        guard let loc = w.location(of: id) else { finish(); return }
                        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(loc.recordLength), alignment: 16)
                        w.readBody(id, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<10])) { r in
                            if case .failure(let e) = r { tooSmall = e }
                            w.readBody(id, into: buf) { r in
                                if case .success(let b) = r { got = Array(b) }
                                buf.deallocate()
                                finish()
                            }
                        }
                    }
                }
                #expect(got == body, "\(kind)")
                #expect(tooSmall != nil)
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

    /// Segments full of finished messages are deleted; a sparse one is compacted
    /// forward; recovery afterwards finds exactly the live messages, with their states.
    @Test(arguments: BackendKind.testable) func compactionKeepsExactlyTheLiveMessages(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(type)
                let tmp = SpoolTempDir("compact"); defer { tmp.remove() }
                let dir = tmp.path + "/loop-0"
                var opts = SpoolWriterOptions(segmentSize: 64_000)
                opts.compactionThreshold = 0.3
                let w = try SpoolWriter(loop: loop, directory: dir, options: opts)
                var ids: [MessageID] = []
                var bodies: [MessageID: [UInt8]] = [:]
                var live: Set<MessageID> = []
                var partial: Set<MessageID> = []
                SpoolLoops.run(loop) { finish in
                    for i in 0..<600 {
                        let body = SpoolTestBody.make(id: MessageID(hi: 1, lo: UInt64(i)), size: 200 + i % 300)
                        let id = body.withUnsafeBytes { w.append(envelope: SpoolFixtures.envelope(i, recipients: 2), body: $0) { _ in } }
                        ids.append(id); bodies[id] = body
                    }
                    w.flush { _ in
                        // Every 7th message stays live (some half-done); the rest finish.
                        for (i, id) in ids.enumerated() {
                            if i % 7 == 0 {
                                live.insert(id)
                                if i % 14 == 0 { w.recordOutcome(id, recipient: 0, state: .expired); partial.insert(id) }
                            } else {
                                w.recordOutcome(id, recipient: 0, state: .delivered)
                                w.recordOutcome(id, recipient: 1, state: .bounced)
                            }
                        }
                        var rounds = 0
                        SpoolLoops.poll(loop) {
                            rounds += 1
                            if rounds > 2000 { finish(); return true }
                            if w.isCompacting || !w.isIdle { return false }
                            let old = w.liveSet.segments.keys.filter { $0 != w.activeSegment }
                            if old.isEmpty { finish(); return true }
                            w.maintain()
                            w.flush { _ in }
                            return false
                        }
                    }
                }
                #expect(w.stats.messagesCompacted == live.count, "\(kind)")
                #expect(SpoolRecovery.listSegments(directory: dir) == [w.activeSegment], "\(kind)")
                let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                #expect(r.problems.isEmpty)
                #expect(Set(r.messages.map(\.id)) == live, "\(kind)")
                for m in r.messages {
                    #expect(m.states[0] == (partial.contains(m.id) ? .expired : .pending))
                    #expect(m.states[1] == .pending)
                    let path = SpoolRecovery.segmentPath(directory: dir, number: m.location.segment)
                    #expect(SpoolRecoveryTests.bodyAt(path, m.location) == bodies[m.id], "\(kind)")
                }
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

    @Test(arguments: BackendKind.testable) func writerContinuesAfterRecovery(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(type)
                let tmp = SpoolTempDir("restart"); defer { tmp.remove() }
                let dir = tmp.path + "/loop-0"
                let old = try SpoolRecoveryTests.writeMessages(dir, count: 10, recipients: 1)
                let rec = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                let w = try SpoolWriter(loop: loop, directory: dir, recovered: rec)
                #expect(w.activeSegment == 2)
                SpoolLoops.run(loop) { finish in
                    for (id, _, _) in old { w.recordOutcome(id, recipient: 0, state: .delivered) }
                    _ = [UInt8](repeating: 1, count: 10).withUnsafeBytes { w.append(envelope: SpoolFixtures.envelope(99, recipients: 1), body: $0) { _ in } }
                    // The deletion is recorded durably (the second flush) before the unlink.
                    w.flush { _ in w.maintain(); w.flush { _ in finish() } }
                }
                // Segment 1 is dead and gone; segment 2 holds the new message.
                #expect(SpoolRecovery.listSegments(directory: dir) == [2], "\(kind)")
                let r = try SpoolRecovery.recover(directory: dir, log: { _ in }).get()
                #expect(r.messages.count == 1 && r.messages.first?.envelope == SpoolFixtures.envelope(99, recipients: 1))
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }

    @Test(arguments: BackendKind.testable) func bodyChunksAreGatheredIntoOneRecord(_ kind: BackendKind) throws {
        struct V: SpoolLoopVisitor {
            func visit<L: EventLoop>(_ type: L.Type, kind: BackendKind) throws {
                let loop = try SpoolLoops.makeLoop(type)
                let tmp = SpoolTempDir("chunks"); defer { tmp.remove() }
                let w = try SpoolWriter(loop: loop, directory: tmp.path + "/loop-0")
                let body = SpoolTestBody.make(id: MessageID(hi: 3, lo: 3), size: 10_000)
                var got: [UInt8] = []
                SpoolLoops.run(loop) { finish in
                    let id = body.withUnsafeBytes { b in
                        w.append(envelope: SpoolFixtures.envelope(5),
                                 bodyChunks: [UnsafeRawBufferPointer(rebasing: b[0..<1]), UnsafeRawBufferPointer(rebasing: b[1..<1]),
                                              UnsafeRawBufferPointer(rebasing: b[1..<7000]), UnsafeRawBufferPointer(rebasing: b[7000...])]) { _ in }
                    }
                    w.flush { _ in
                        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 20_000, alignment: 16)
                        w.readBody(id, into: buf) { r in
                            if case .success(let b) = r { got = Array(b) }
                            buf.deallocate()
                            finish()
                        }
                    }
                }
                #expect(got == body, "\(kind)")
            }
        }
        try SpoolLoops.forBackend(kind, V())
    }
}
