#if canImport(Glibc)
import Glibc
#endif

/// A live message found at start-up: what the queues are rebuilt from.
public struct RecoveredMessage: Sendable {
    public var id: MessageID
    public var envelope: SpoolEnvelope
    public var location: MessageLocation
    public var states: RecipientStates
}

/// One segment file as recovery saw it.
public struct RecoveredSegment: Sendable {
    public var number: UInt32
    public var path: String
    /// File size after any torn tail was cut.
    public var bytes: Int64
    public var messageRecords: Int
    public var outcomeRecords: Int
}

/// The state of one stream directory (`DIR/loop-N`) after recovery.
public struct SpoolStreamRecovery {
    public var directory: String
    public var segments: [RecoveredSegment]
    /// Live messages (some recipient pending), ordered by location.
    public var messages: [RecoveredMessage]
    /// The bookkeeping a `SpoolWriter` for this stream continues from.
    public var liveSet: SpoolLiveSet
    /// The number the writer's first new segment gets.
    public var nextSegment: UInt32
    /// Corrupt records skipped and torn tails cut, with path and offset.
    public var problems: [SpoolError]
}

/// Start-up recovery: scans all segments in order with plain synchronous reads
/// (it runs before the loops start), verifies every record, rebuilds the live set.
/// A torn tail is cut (logged to stderr) in `.repair` mode; a corrupt record
/// in the middle is reported, skipped, and scanning resynchronises on the next
/// valid record.
public enum SpoolRecovery {
    public enum Mode: Sendable {
        /// Truncate torn tails (start-up).
        case repair
        /// Change nothing (`peregrine spool-check`).
        case readOnly
    }

    public static func segmentPath(directory: String, number: UInt32) -> String {
        let s = String(number)
        return directory + "/" + String(repeating: "0", count: max(0, 6 - s.count)) + s + ".seg"
    }

    /// Highest segment number a writer starts or rolls over to. Names above it
    /// were not written by this spool (2^31 rollovers would take decades), and
    /// taking them would make the next number overflow.
    public static let maxSegmentNumber: UInt32 = UInt32(Int32.max)

    /// The number in a segment file name exactly as `segmentPath` spells it
    /// (`000042.seg`), within 1...maxSegmentNumber; nil for anything else.
    public static func segmentNumber(fileName name: String) -> UInt32? {
        guard name.hasSuffix(".seg") else { return nil }
        let digits = name.dropLast(4)
        guard !digits.isEmpty, digits.utf8.count <= 10, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let n = UInt32(digits), n >= 1, n <= maxSegmentNumber else { return nil }
        let s = String(n)
        guard String(repeating: "0", count: max(0, 6 - s.count)) + s == digits else { return nil }
        return n
    }

    /// The N of a stream directory name `loop-N` as the daemon spells it (plain
    /// decimal, no sign or leading zeros, at most six digits); nil otherwise.
    public static func streamNumber(directoryName name: String) -> Int? {
        guard name.hasPrefix("loop-") else { return nil }
        let digits = name.dropFirst(5)
        guard !digits.isEmpty, digits.utf8.count <= 6, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let n = Int(digits), String(n) == digits else { return nil }
        return n
    }

    /// Segment numbers present in `directory`, sorted. Missing directory = none.
    public static func listSegments(directory: String) -> [UInt32] {
        scanSegments(directory: directory).numbers
    }

    public static func listSegments<FS: SpoolFileSystem>(directory: String, fileSystem: FS) -> [UInt32] {
        scanSegments(directory: directory, fileSystem: fileSystem).numbers
    }

    /// Segment numbers present in `directory`, sorted, and the names of other
    /// `*.seg` files (not written by this spool: reported, never read).
    public static func scanSegments(directory: String) -> (numbers: [UInt32], strays: [String]) {
        scanSegments(directory: directory, fileSystem: PosixSpoolFileSystem())
    }

    public static func scanSegments<FS: SpoolFileSystem>(directory: String,
                                                         fileSystem: FS) -> (numbers: [UInt32], strays: [String]) {
        var result: [UInt32] = []
        var strays: [String] = []
        for name in fileSystem.listDirectory(directory) ?? [] where name.hasSuffix(".seg") {
            if let n = segmentNumber(fileName: name) { result.append(n) } else { strays.append(name) }
        }
        return (result.sorted(), strays.sorted())
    }

    /// Where damaged segments are moved (`DIR/loop-N/quarantine`), with a
    /// `NNNNNN.seg.missing` marker for each segment found missing: they stay
    /// until an operator has looked at them, and `spool-check` lists them.
    public static func quarantineDirectory(stream directory: String) -> String { directory + "/quarantine" }

    /// Stream directories `loop-N` under a spool directory, sorted by N.
    public static func listStreams(spoolDirectory: String) -> [String] {
        guard let d = opendir(spoolDirectory) else { return [] }
        defer { closedir(d) }
        var result: [(Int, String)] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let n = streamNumber(directoryName: name) else { continue }
            result.append((n, spoolDirectory + "/" + name))
        }
        return result.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Recovers every `loop-N` stream under `spoolDirectory`.
    public static func recoverAll(spoolDirectory: String, mode: Mode = .repair,
                                  log: (String) -> Void = logToStderr) -> Result<[SpoolStreamRecovery], SpoolError> {
        var out: [SpoolStreamRecovery] = []
        for dir in listStreams(spoolDirectory: spoolDirectory) {
            switch recover(directory: dir, mode: mode, log: log) {
            case .success(let r): out.append(r)
            case .failure(let e): return .failure(e)
            }
        }
        return .success(out)
    }

    public static func logToStderr(_ line: String) {
        fputs("peregrine spool: \(line)\n", stderr)
    }

    /// Recovers one stream directory. Fails only when a file cannot be read at
    /// all (or, in `.repair` mode, a damaged one cannot be moved aside);
    /// damaged content is reported in `problems`.
    public static func recover(directory: String, mode: Mode = .repair,
                               log: (String) -> Void = logToStderr) -> Result<SpoolStreamRecovery, SpoolError> {
        recover(directory: directory, mode: mode, fileSystem: PosixSpoolFileSystem(), log: log)
    }

    /// Recovers one stream directory through `fs`.
    ///
    /// - A partial record at the end of the newest segment is a torn tail (a
    ///   crash mid-write: nothing there was acknowledged): cut in `.repair` mode.
    ///   An empty newest segment (created just before a crash) is removed.
    /// - Anything else that fails its checks is damage: a corrupt record
    ///   anywhere, garbage at the end of an older segment (the writer seals a
    ///   segment, fsync completed, before it writes to the next one, so only the
    ///   newest can be torn), an empty older segment, a segment the newest
    ///   catalogue lists that is gone. Each is reported; in `.repair` mode a
    ///   damaged segment is moved to the quarantine directory, never truncated or
    ///   deleted, and its intact records (before and after the damage) are
    ///   rewritten under its name, so no record that can be read is lost.
    public static func recover<FS: SpoolFileSystem>(directory: String, mode: Mode = .repair, fileSystem fs: FS,
                                                    log: (String) -> Void = logToStderr)
        -> Result<SpoolStreamRecovery, SpoolError> {
        let live = SpoolLiveSet()
        // Live candidates in scan order, indexed by id; locations and states are
        // taken from the live set at the end, dead ones dropped in place.
        var found: [RecoveredMessage] = []
        var index: [MessageID: Int] = [:]
        let released = SpoolEnvelope(sender: [], recipients: [], receivedAt: 0)
        /// Outcomes seen before their message's (compacted) record: applied when it appears.
        var early: [MessageID: [(Int, RecipientState)]] = [:]
        var segments: [RecoveredSegment] = []
        var problems: [SpoolError] = []
        /// The newest segment-start record seen, and the segments it lists.
        var catalogue: (segment: UInt32, list: [UInt32])?
        /// Segments deletion records account for, and segments reported otherwise.
        var deletedByWriter: Set<UInt32> = []
        var handled: Set<UInt32> = []
        var removedNewest: UInt32?
        let (numbers, strays) = scanSegments(directory: directory, fileSystem: fs)
        for name in strays {
            log("\(directory)/\(name): not a segment name this spool writes (000001.seg ... \(maxSegmentNumber).seg), left alone")
        }
        // One read buffer for all segments (they are read one at a time).
        var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { scratch.deallocate() }

        /// A unique name for `path` in the quarantine directory.
        func quarantineTarget(_ path: String) -> Result<String, SpoolError> {
            let qdir = quarantineDirectory(stream: directory)
            do throws(SpoolError) { try fs.makeDirectory(qdir) } catch { return .failure(error) }
            let base = qdir + "/" + (path.split(separator: "/").last.map(String.init) ?? "segment")
            var target = base
            var k = 1
            while fs.fileExists(target) { target = base + "." + String(k); k += 1 }
            return .success(target)
        }

        // A rewrite interrupted by a crash leaves its temporary file: the segment itself is intact.
        if mode == .repair {
            for name in fs.listDirectory(directory) ?? [] where name.hasSuffix(".seg.tmp") {
                _ = fs.removeFile(directory + "/" + name)
            }
        }
        // Segments created just before a stop, never written to, are at the end:
        // the writer seals a segment before writing to the next, and creates it
        // before that. The newest segment is the last one holding anything.
        var sizes: [Int64] = []
        for n in numbers { sizes.append(fs.fileSize(segmentPath(directory: directory, number: n)) ?? 0) }
        let newestIndex = sizes.lastIndex { $0 > 0 } ?? -1
        for position in numbers.indices where position > newestIndex {
            let n = numbers[position]
            let path = segmentPath(directory: directory, number: n)
            if mode == .repair {
                if let e = fs.removeFile(path) { return .failure(e) }
                log("\(path): empty segment after the newest (created just before a stop), removed")
                if removedNewest == nil { removedNewest = n }
            } else {
                segments.append(RecoveredSegment(number: n, path: path, bytes: 0, messageRecords: 0, outcomeRecords: 0))
                live.addSegment(n)
            }
        }
        if removedNewest != nil { fs.syncDirectory(directory) }

        for (position, n) in numbers.enumerated() where position <= newestIndex {
            let newest = position == newestIndex
            let path = segmentPath(directory: directory, number: n)
            var got: Int
            switch fs.readFile(path, into: &scratch) {
            case .success(let v): got = v
            case .failure(let e): return .failure(e)
            }
            if got == 0 {
                problems.append(.emptySegment(path: path))
                log("\(path): empty segment that is not the newest: whatever it held is lost")
                handled.insert(n)
                if mode == .repair {
                    let target: String
                    switch quarantineTarget(path) {
                    case .success(let t): target = t
                    case .failure(let e): return .failure(e)
                    }
                    if let e = fs.rename(path, to: target) { return .failure(e) }
                    fs.syncDirectory(quarantineDirectory(stream: directory))
                    fs.syncDirectory(directory)
                    log("\(path): moved to \(target)")
                    continue
                }
                segments.append(RecoveredSegment(number: n, path: path, bytes: 0, messageRecords: 0, outcomeRecords: 0))
                live.addSegment(n)
                continue
            }

            // Framing pass: every whole, verified record, and where the damage is.
            var ranges: [(offset: Int, length: Int, kind: SpoolRecordFormat.Kind)] = []
            var corrupt: [(offset: Int, bytes: Int)] = []
            var torn: Int?
            do {
                let bytes = UnsafeRawBufferPointer(rebasing: scratch[0 ..< got])
                var offset = 0
                while offset < got {
                    switch SpoolRecordFormat.frame(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                    case .record(let kind, let length):
                        ranges.append((offset, SpoolRecordFormat.headerSize + length, kind))
                        offset += SpoolRecordFormat.headerSize + length
                    case .incomplete, .invalid:
                        if let next = resync(bytes, after: offset) {
                            corrupt.append((offset, next - offset))
                            offset = next
                        } else {
                            torn = offset
                            offset = got
                        }
                    }
                }
            }
            if let t = torn, !newest {
                // Only the newest segment can end in a partial write.
                corrupt.append((t, got - t))
                torn = nil
            }
            for c in corrupt {
                problems.append(.segmentCorrupt(path: path, offset: Int64(c.offset)))
                log("\(path): corrupt data at offset \(c.offset) (\(c.bytes) bytes)")
            }
            if !corrupt.isEmpty && mode == .repair {
                // Keep the damaged file whole for inspection (a copy in the quarantine
                // directory), then replace the segment atomically by its intact records.
                var clean = [UInt8]()
                clean.reserveCapacity(ranges.reduce(0) { $0 + $1.length })
                for r in ranges { clean += UnsafeRawBufferPointer(rebasing: scratch[r.offset ..< r.offset + r.length]) }
                let target: String
                switch quarantineTarget(path) {
                case .success(let t): target = t
                case .failure(let e): return .failure(e)
                }
                if let e = fs.writeFile(target, UnsafeRawBufferPointer(rebasing: scratch[0 ..< got])) { return .failure(e) }
                fs.syncDirectory(quarantineDirectory(stream: directory))
                let temporary = path + ".tmp"
                if let e = clean.withUnsafeBytes({ fs.writeFile(temporary, $0) }) { return .failure(e) }
                if let e = fs.rename(temporary, to: path) { return .failure(e) }
                fs.syncDirectory(directory)
                problems.append(.quarantined(path: path, to: target))
                log("\(path): copied to \(target); \(ranges.count) intact record(s) kept in \(path)")
                clean.withUnsafeBytes { if $0.count > 0 { scratch.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
                var o = 0
                for i in ranges.indices { ranges[i].offset = o; o += ranges[i].length }
                got = clean.count
            }
            var segBytes = Int64(got)
            if let t = torn {
                let dropped = Int64(got - t)
                problems.append(.tornTail(path: path, offset: Int64(t), droppedBytes: dropped))
                if mode == .repair && t == 0 {
                    // Nothing whole in it: remove it like an empty newest segment (a
                    // zero-length file left behind would no longer be the newest).
                    if let e = fs.removeFile(path) { return .failure(e) }
                    fs.syncDirectory(directory)
                    log("\(path): torn tail at offset 0, removed (\(dropped) bytes)")
                    removedNewest = n
                    continue
                }
                if mode == .repair {
                    if let e = fs.truncateFile(path, length: Int64(t)) { return .failure(e) }
                    log("\(path): torn tail at offset \(t), truncated \(dropped) bytes")
                    segBytes = Int64(t)
                } else {
                    log("\(path): torn tail at offset \(t) (\(dropped) bytes)")
                }
            }

            let bytes = UnsafeRawBufferPointer(rebasing: scratch[0 ..< got])
            live.addSegment(n)
            var seg = RecoveredSegment(number: n, path: path, bytes: segBytes, messageRecords: 0, outcomeRecords: 0)
            for (offset, recLen, kind) in ranges {
                // Verified by the framing pass (checksum included): not checked twice.
                let here = UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + recLen])
                let payload = UnsafeRawBufferPointer(rebasing: here[SpoolRecordFormat.headerSize...])
                live.noteWritten(segment: n, bytes: recLen)
                switch kind {
                case .message:
                    guard let m = SpoolRecordFormat.decodeMessage(record: here) else {
                        // Checksum good but structure bad: a writer bug, not disk damage. Skip the record.
                        problems.append(.segmentCorrupt(path: path, offset: Int64(offset)))
                        log("\(path): malformed message record at offset \(offset), skipped")
                        continue
                    }
                    seg.messageRecords += 1
                    var states = m.states
                    if let pend = early.removeValue(forKey: m.id) {
                        for (i, s) in pend where states[i] == .pending { states[i] = s }
                    }
                    let loc = MessageLocation(segment: n, offset: Int64(offset), recordLength: UInt32(recLen),
                                              bodyOffset: UInt32(m.bodyOffset))
                    if live.place(m.id, at: loc, states: states) {
                        if let i = index[m.id] { found[i].envelope = m.envelope } else {
                            index[m.id] = found.count
                            found.append(RecoveredMessage(id: m.id, envelope: m.envelope, location: loc, states: states))
                        }
                    } else {
                        if let i = index[m.id] { found[i].envelope = released }
                    }
                case .outcome:
                    guard let (id, idx, state) = SpoolRecordFormat.decodeOutcome(payload: payload) else {
                        problems.append(.segmentCorrupt(path: path, offset: Int64(offset)))
                        continue
                    }
                    seg.outcomeRecords += 1
                    if let pending = live.applyOutcome(id, recipient: idx, state: state, writtenIn: n) {
                        if pending == 0, let i = index[id] { found[i].envelope = released }
                    } else if state.isFinal {
                        early[id, default: []].append((idx, state))
                    }
                case .segmentStart:
                    if offset == 0, let list = SpoolRecordFormat.decodeSegmentStart(payload: payload) {
                        catalogue = (n, list)
                    }
                case .segmentDeleted:
                    if let k = SpoolRecordFormat.decodeSegmentDeleted(payload: payload) { deletedByWriter.insert(k) }
                case .padding:
                    break
                }
            }
            segments.append(seg)
        }

        // A segment the newest catalogue lists must be there unless the writer recorded deleting it.
        if let (newestListed, list) = catalogue {
            let present = Set(numbers)
            let qdir = quarantineDirectory(stream: directory)
            for k in list.sorted() where k < newestListed && !present.contains(k) && !deletedByWriter.contains(k)
                                          && !handled.contains(k) {
                let path = segmentPath(directory: directory, number: k)
                // Moved aside or marked missing by an earlier start: spool-check lists the quarantine.
                let name = path.split(separator: "/").last.map(String.init) ?? ""
                if fs.fileExists(qdir + "/" + name) || fs.fileExists(qdir + "/" + name + ".missing") { continue }
                problems.append(.segmentMissing(path: path))
                log("\(path): missing: listed in \(segmentPath(directory: directory, number: newestListed))'s catalogue "
                    + "and never deleted by the spool; the messages it held are lost")
                if mode == .repair {
                    // The next catalogue will not list it: leave a marker so the loss stays visible.
                    do throws(SpoolError) { try fs.makeDirectory(qdir) } catch { return .failure(error) }
                    let marker = qdir + "/" + (path.split(separator: "/").last.map(String.init) ?? "") + ".missing"
                    if let e = fs.writeFile(marker, UnsafeRawBufferPointer(start: nil, count: 0)) { return .failure(e) }
                    fs.syncDirectory(qdir)
                }
            }
        }

        index = [:]
        found.removeAll { live.entry($0.id) == nil }
        for i in found.indices {
            if let e = live.entry(found[i].id) { found[i].location = e.location; found[i].states = e.states }
        }
        found.sort { ($0.location.segment, $0.location.offset) < ($1.location.segment, $1.location.offset) }
        let messages = found
        let next = removedNewest ?? ((numbers.last ?? 0) + 1)
        return .success(SpoolStreamRecovery(directory: directory, segments: segments, messages: messages,
                                            liveSet: live, nextSegment: next, problems: problems))
    }

    /// The next offset after `offset` where a whole valid record starts, if any.
    static func resync(_ bytes: UnsafeRawBufferPointer, after offset: Int) -> Int? {
        let m0: UInt8 = 0x50 // first byte of the little-endian magic
        var p = offset + 1
        let end = bytes.count - SpoolRecordFormat.headerSize
        while p <= end {
            if bytes[p] == m0 {
                if case .record = SpoolRecordFormat.frame(UnsafeRawBufferPointer(rebasing: bytes[p...])) { return p }
            }
            p += 1
        }
        return nil
    }
}
