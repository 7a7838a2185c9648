#if canImport(Glibc)
import Glibc
#endif
import Testing
import PeregrineIO
@testable import PeregrineSpool

/// The suppression list's pieces over byte strings: normal form, digests,
/// the open-addressing table against a Set oracle, the log's framing and
/// its loader on every truncation and on damaged bytes, compaction.
@Suite(.timeLimit(.minutes(10))) struct SuppressionListTests {
    func n(_ s: String) -> String? { SuppressionKey.normalise(s).map { String(decoding: $0, as: UTF8.self) } }

    @Test func normalFormLowerCasesAndMarksDomains() {
        #expect(n("John.Doe+X@Example.COM") == "john.doe+x@example.com")
        #expect(n(" <a@b.example.> ") == "a@b.example")
        #expect(n("Example.com") == "@example.com")
        #expect(n("@Example.com") == "@example.com")
        #expect(n("a@[192.0.2.1]") == "a@[192.0.2.1]")
        for bad in ["", "@", "a@", "a b@x.com", "a@x..com", "a@.x.com", "a@x_y.com", "a@\u{01}x.com",
                    String(repeating: "a", count: 400) + "@x.com"] {
            #expect(n(bad) == nil, "\(bad.prefix(20)) was accepted")
        }
    }

    @Test func recipientDigestsMatchTheNormalForms() {
        func digest(_ s: String) -> UInt64 { SuppressionKey.normalise(s)!.withUnsafeBytes { SuppressionKey.digest($0) } }
        for (rcpt, address, domain) in [("John@Example.COM", "john@example.com", "example.com"),
                                        ("<x@y.example.>", "x@y.example", "y.example"),
                                        ("q\"a@b\"@c.example", "q\"a@b\"@c.example", "c.example")] {
            var r = rcpt
            let d = r.withUTF8 { SuppressionKey.recipientDigests(UnsafeRawBufferPointer($0)) }
            #expect(d?.address == digest(address))
            #expect(d?.domain == digest(domain))
            #expect(d?.address != d?.domain)
        }
        var none = "no-domain"
        #expect(none.withUTF8 { SuppressionKey.recipientDigests(UnsafeRawBufferPointer($0)) } == nil)
    }

    @Test func tableAgreesWithASetUnderRandomInsertsAndRemovals() {
        var rng = SeededRandom(seed: 16)
        let table = SuppressionTable(minimumCapacity: 8)
        var oracle: [UInt64: SuppressionReason] = [:]
        // Few distinct low bits: long probe runs and wrap-around, where backward shift can go wrong.
        func draw() -> UInt64 { (rng.next() % 3000) &* 0x1_0000_0001 }
        for step in 0..<60_000 {
            let d = draw()
            let k = SuppressionTable.key(d)
            switch rng.next() % 3 {
            case 0, 1:
                let reason = SuppressionReason.allCases[Int(rng.next() % 3)]
                #expect(table.insert(d, reason: reason) == (oracle[k] == nil))
                oracle[k] = reason
            default:
                #expect(table.remove(d) == (oracle.removeValue(forKey: k) != nil))
            }
            if step % 5000 == 0 || step == 59_999 {
                #expect(table.count == oracle.count)
                for probe in 0..<3000 {
                    let p = UInt64(probe) &* 0x1_0000_0001
                    #expect(table.reason(p) == oracle[SuppressionTable.key(p)])
                }
            }
        }
        var seen = 0
        table.forEach { key, reason in seen += 1; #expect(oracle[key] == reason) }
        #expect(seen == oracle.count)
    }

    @Test func tableDeletesAcrossTheWrapAround() {
        let table = SuppressionTable(minimumCapacity: 8)  // 16 slots
        let cap = UInt64(table.capacity)
        // Three keys homed at the last slot: they wrap to slots 0 and 1.
        let keys = [cap - 1, 2 * cap - 1, 3 * cap - 1]
        for k in keys { table.insert(k, reason: .manual) }
        table.insert(1, reason: .bounce)  // home 1, displaced to 2
        #expect(table.remove(keys[0]))
        for k in keys.dropFirst() { #expect(table.contains(k)) }
        #expect(table.reason(1) == .bounce)
        #expect(!table.contains(keys[0]))
    }

    func tempLog(_ tag: String) -> String { makeTempDir("supp-\(tag)") + "/suppression.log" }

    func add(_ list: SuppressionList, _ s: String, _ r: SuppressionReason = .manual) {
        list.apply(.add, normalised: SuppressionKey.normalise(s)!, reason: r, time: 1_700_000_000)
    }

    /// A tenant's recipient digests are the digests of the stored scoped
    /// texts (`tenant SP entry`), and scopes never collide with each other or
    /// with the global entry.
    @Test func tenantDigestsMatchTheScopedTexts() {
        func digest(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { SuppressionKey.digest($0) } }
        let acme = SuppressionKey.normaliseTenant("ACME")!
        #expect(acme == Array("acme".utf8))
        for bad in ["", "a b", "x\u{01}", "é", String(repeating: "t", count: 129)] {
            #expect(SuppressionKey.normaliseTenant(bad) == nil, "\(bad.prefix(10)) was accepted")
        }
        for (rcpt, address, domain) in [("John@Example.COM", "john@example.com", "example.com"),
                                        ("<x@y.example.>", "x@y.example", "y.example")] {
            var r = rcpt
            let scoped = r.withUTF8 { raw in acme.withUnsafeBytes { SuppressionKey.recipientDigests(UnsafeRawBufferPointer(raw), tenant: $0) } }
            let global = r.withUTF8 { SuppressionKey.recipientDigests(UnsafeRawBufferPointer($0)) }
            #expect(scoped?.address == digest(SuppressionKey.scoped(SuppressionKey.normalise(address)!, tenant: acme)))
            #expect(scoped?.domain == digest(SuppressionKey.scoped(SuppressionKey.normalise(domain)!, tenant: acme)))
            #expect(scoped?.address != global?.address && scoped?.domain != global?.domain)
        }
        let split = SuppressionKey.split(SuppressionKey.scoped(Array("a@b.example".utf8), tenant: acme))
        #expect(split.tenant == "acme" && split.entry == "a@b.example")
        #expect(SuppressionKey.split(Array("@b.example".utf8)).tenant == nil)
        // What a cluster node accepts from another: stored forms only.
        #expect(SuppressionKey.isStoredForm(Array("acme a@b.example".utf8)) && SuppressionKey.isStoredForm(Array("@b.example".utf8)))
        for bad in ["ACME a@b.example", "acme A@b.example", "acme  a@b.example", " a@b.example", "acme ", "a b c@d.example"] {
            #expect(!SuppressionKey.isStoredForm(Array(bad.utf8)), "\(bad) was accepted")
        }
    }

    @Test func tenantEntriesMatchTheirScopeThenTheGlobalOnes() throws {
        let path = tempLog("tenant")
        let acme = SuppressionKey.normaliseTenant("acme")!, globex = SuppressionKey.normaliseTenant("globex")!
        do {
            let (list, _) = try SuppressionList.open(path: path)
            list.apply(.add, normalised: SuppressionKey.scoped(SuppressionKey.normalise("a@x.example")!, tenant: acme), reason: .manual, time: 1)
            list.apply(.add, normalised: SuppressionKey.scoped(SuppressionKey.normalise("blocked.example")!, tenant: globex),
                       reason: .complaint, time: 1)
            list.apply(.add, normalised: SuppressionKey.normalise("g@x.example")!, reason: .bounce, time: 1)
            list.waitUntilDurable()
        }
        let (list, report) = try SuppressionList.open(path: path)
        #expect(report.entries == 3)
        #expect(list.match(recipient: "A@x.example", tenant: acme).map { "\($0.reason) \($0.scoped)" } == "manual true")
        #expect(list.match(recipient: "a@x.example", tenant: globex) == nil)
        #expect(list.match(recipient: "a@x.example", tenant: nil) == nil)
        #expect(list.match(recipient: "g@x.example", tenant: acme).map { "\($0.reason) \($0.scoped)" } == "bounce false")
        #expect(list.match(recipient: "q@Blocked.example", tenant: globex)?.reason == .complaint)
        #expect(list.match(recipient: "q@blocked.example", tenant: acme) == nil)
        #expect(list.reason(forRecipient: "a@x.example") == nil)
    }

    @Test func changesSurviveReopening() throws {
        let path = tempLog("reopen")
        do {
            let (list, report) = try SuppressionList.open(path: path)
            #expect(report.records == 0 && report.entries == 0 && report.damage == nil)
            add(list, "A@Example.com", .bounce)
            add(list, "b@example.com", .complaint)
            add(list, "blocked.example")
            add(list, "c@example.com")
            list.apply(.remove, normalised: SuppressionKey.normalise("c@example.com")!, reason: .manual, time: 1)
            #expect(list.reason(forRecipient: "a@EXAMPLE.com") == .bounce)
            #expect(list.reason(forRecipient: "anyone@Blocked.Example") == .manual)
            #expect(list.reason(forRecipient: "c@example.com") == nil)
            list.waitUntilDurable()
        }
        let (list, report) = try SuppressionList.open(path: path)
        #expect(report.records == 5 && report.entries == 3 && report.damagedBytes == 0)
        #expect(list.reason(forRecipient: "<a@example.com>") == .bounce)
        #expect(list.reason(forRecipient: "b@example.com") == .complaint)
        #expect(list.reason(forRecipient: "x@blocked.example") == .manual)
        #expect(list.reason(forRecipient: "x@sub.blocked.example") == nil)
        #expect(list.reason(forRecipient: "c@example.com") == nil)
    }

    /// Every cut of the file loads the records before the cut and reports the rest.
    @Test func everyTruncationLoadsTheWholeRecordsBeforeIt() throws {
        let path = tempLog("cut")
        var ends: [Int] = []
        do {
            let (list, _) = try SuppressionList.open(path: path)
            for i in 0..<6 {
                add(list, "user\(i)@example.com")
                list.waitUntilDurable()
                var st = stat()
                stat(path, &st)
                ends.append(Int(st.st_size))
            }
        }
        let whole = try Posix.readFile(path)
        for cut in 0...whole.count {
            let copy = path + ".cut"
            writeFile(copy, Array(whole[0..<cut]))
            let (list, report) = try SuppressionList.open(path: copy)
            let complete = ends.filter { $0 <= cut }.count
            #expect(report.entries == complete, "cut at \(cut)")
            #expect(list.count == complete)
            let expectedEnd = cut < SuppressionLog.headerBytes ? SuppressionLog.headerBytes
                : (ends.last { $0 <= cut } ?? SuppressionLog.headerBytes)
            #expect(report.damagedBytes == Int64(cut < SuppressionLog.headerBytes ? cut : cut - expectedEnd))
            // The tail is gone from the file: the next append follows the last whole record.
            var st = stat()
            stat(copy, &st)
            #expect(Int(st.st_size) == expectedEnd, "cut at \(cut)")
            add(list, "after@example.com")
            list.waitUntilDurable()
            let (again, r2) = try SuppressionList.open(path: copy)
            #expect(r2.damagedBytes == 0 && again.count == complete + 1)
        }
    }

    @Test func aDamagedByteEndsTheLogThereAndIsReported() throws {
        let path = tempLog("flip")
        do {
            let (list, _) = try SuppressionList.open(path: path)
            for i in 0..<10 { add(list, "u\(i)@example.com") }
            list.waitUntilDurable()
        }
        var bytes = try Posix.readFile(path)
        let recordSize = (bytes.count - SuppressionLog.headerBytes) / 10
        // A byte in the text of the fourth record: its CRC fails, three load.
        bytes[SuppressionLog.headerBytes + 3 * recordSize + 20] ^= 0x40
        writeFile(path, bytes)
        let (list, report) = try SuppressionList.open(path: path)
        #expect(report.entries == 3)
        #expect(report.damage == "a checksum mismatch")
        #expect(report.damagedBytes == Int64(7 * recordSize))
        #expect(list.reason(forRecipient: "u2@example.com") == .manual)
        #expect(list.reason(forRecipient: "u3@example.com") == nil)
        // A length beyond any record.
        var huge = try Posix.readFile(path)
        huge.append(contentsOf: [0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 1])
        writeFile(path, huge)
        let (_, r2) = try SuppressionList.open(path: path)
        #expect(r2.entries == 3 && r2.damagedBytes == 10 && r2.damage?.contains("length") == true)
    }

    @Test func aFileThatIsNotALogIsRefusedAndKept() throws {
        let path = tempLog("magic")
        writeFile(path, Array("user@example.com\n".utf8))
        #expect(throws: IOError.self) { _ = try SuppressionList.open(path: path) }
        #expect(try Posix.readFile(path) == Array("user@example.com\n".utf8))
    }

    /// Random bytes after a valid header never crash the loader and never yield a record past the damage.
    @Test func randomTailsLoadWithoutCrashing() throws {
        var rng = SeededRandom(seed: 1616)
        let path = tempLog("fuzz")
        for round in 0..<300 {
            var bytes = SuppressionLog.magic
            var good: [UInt8] = []
            SuppressionLog.encode(.add, reason: .bounce, time: 7, text: Array("ok@example.com".utf8), into: &good)
            bytes += good
            let n = Int(rng.next() % 400)
            for _ in 0..<n { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
            if round % 3 == 0 && n >= 4 { bytes[8 + good.count] = UInt8(rng.next() % 40) ; bytes[9 + good.count] = 0 }
            writeFile(path, bytes)
            let (list, report) = try SuppressionList.open(path: path)
            #expect(list.reason(forRecipient: "ok@example.com") == .bounce)
            #expect(report.records >= 1)
            #expect(report.damagedBytes >= 0 && report.damagedBytes <= Int64(n))
        }
    }

    @Test func compactionKeepsTheLiveEntriesOnly() throws {
        let path = tempLog("compact")
        do {
            let (list, _) = try SuppressionList.open(path: path)
            list.compactionMinimum = 100
            for i in 0..<300 { add(list, "u\(i)@example.com") }
            list.waitUntilDurable()
            for i in 0..<250 {
                list.apply(.remove, normalised: SuppressionKey.normalise("u\(i)@example.com")!, reason: .manual, time: 2)
            }
            add(list, "u0@example.com", .complaint)  // back again, another reason
            list.waitUntilDurable()
            #expect(list.count == 51)
            // The list still takes changes after compacting. (The writer compacts
            // after acknowledging a commit: only the next commit's wait follows it.)
            add(list, "late@example.com")
            list.waitUntilDurable()
            #expect(list.compactions >= 1)  // two when the removals were split across commits
        }
        let (list, report) = try SuppressionList.open(path: path)
        #expect(report.entries == 52)
        #expect(report.records < 300)
        #expect(list.reason(forRecipient: "u0@example.com") == .complaint)
        #expect(list.reason(forRecipient: "u1@example.com") == nil)
        #expect(list.reason(forRecipient: "u299@example.com") == .manual)
        #expect(list.reason(forRecipient: "late@example.com") == .manual)
        #expect(!listDir(path.directory).contains("suppression.log.compact"))
    }

    @Test func entriesListsLiveEntriesOnceInOrder() throws {
        let (list, _) = try SuppressionList.open(path: tempLog("entries"))
        for s in ["a@x.com", "b@x.com", "x.com", "c@x.com"] { add(list, s) }
        add(list, "a@x.com", .bounce)
        list.apply(.remove, normalised: SuppressionKey.normalise("b@x.com")!, reason: .manual, time: 1)
        let got = Locked<[String]>([])
        let done = Locked<Bool>(false)
        list.entries(limit: 10) { result in
            if case .success(let e) = result { got.withLock { $0 = e.map { "\($0.text)=\($0.reason.name)" } } }
            done.withLock { $0 = true }
        }
        list.waitUntilDurable()
        #expect(done.withLock { $0 })
        #expect(got.withLock { $0 } == ["a@x.com=hard-bounce", "@x.com=operator", "c@x.com=operator"])
    }
}

extension String { fileprivate var directory: String { String(self[..<self.lastIndex(of: "/")!]) } }

private func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
