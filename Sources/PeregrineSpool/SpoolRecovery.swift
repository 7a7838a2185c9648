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

    /// Segment numbers present in `directory`, sorted, and the names of other
    /// `*.seg` files (not written by this spool: reported, never read).
    public static func scanSegments(directory: String) -> (numbers: [UInt32], strays: [String]) {
        guard let d = opendir(directory) else { return ([], []) }
        defer { closedir(d) }
        var result: [UInt32] = []
        var strays: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name.hasSuffix(".seg") else { continue }
            if let n = segmentNumber(fileName: name) { result.append(n) } else { strays.append(name) }
        }
        return (result.sorted(), strays.sorted())
    }

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
    /// all; damaged content is reported in `problems`.
    public static func recover(directory: String, mode: Mode = .repair,
                               log: (String) -> Void = logToStderr) -> Result<SpoolStreamRecovery, SpoolError> {
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
        let (numbers, strays) = scanSegments(directory: directory)
        for name in strays {
            log("\(directory)/\(name): not a segment name this spool writes (000001.seg ... \(maxSegmentNumber).seg), left alone")
        }
        // One read buffer for all segments (they are read one at a time).
        var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 4096)
        defer { scratch.deallocate() }

        for n in numbers {
            let path = segmentPath(directory: directory, number: n)
            let fd = open(path, mode == .repair ? O_RDWR : O_RDONLY)
            if fd < 0 { return .failure(.io(path: path, operation: "open", errno: errno)) }
            defer { close(fd) }
            var st = stat()
            if fstat(fd, &st) != 0 { return .failure(.io(path: path, operation: "fstat", errno: errno)) }
            let size = Int(st.st_size)
            if scratch.count < size {
                scratch.deallocate()
                scratch = .allocate(byteCount: size, alignment: 4096)
            }
            let raw = scratch
            var got = 0
            while got < size {
                let r = pread(fd, raw.baseAddress! + got, size - got, off_t(got))
                if r < 0 {
                    if errno == EINTR { continue }
                    return .failure(.io(path: path, operation: "read", errno: errno))
                }
                if r == 0 { break }
                got += r
            }
            let bytes = UnsafeRawBufferPointer(rebasing: raw[0 ..< got])
            live.addSegment(n)
            var seg = RecoveredSegment(number: n, path: path, bytes: Int64(got), messageRecords: 0, outcomeRecords: 0)

            var offset = 0
            scan: while offset < got {
                let here = UnsafeRawBufferPointer(rebasing: bytes[offset...])
                switch SpoolRecordFormat.frame(here) {
                case .record(let kind, let length):
                    let recLen = SpoolRecordFormat.headerSize + length
                    let payload = UnsafeRawBufferPointer(rebasing: here[SpoolRecordFormat.headerSize ..< recLen])
                    live.noteWritten(segment: n, bytes: recLen)
                    switch kind {
                    case .message:
                        guard let m = SpoolRecordFormat.decodeMessage(payload: payload) else {
                            // Checksum good but structure bad: a writer bug, not disk damage. Skip the record.
                            problems.append(.segmentCorrupt(path: path, offset: Int64(offset)))
                            log("\(path): malformed message record at offset \(offset), skipped")
                            offset += recLen
                            continue scan
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
                            offset += recLen
                            continue scan
                        }
                        seg.outcomeRecords += 1
                        if let pending = live.applyOutcome(id, recipient: idx, state: state, writtenIn: n) {
                            if pending == 0, let i = index[id] { found[i].envelope = released }
                        } else if state.isFinal {
                            early[id, default: []].append((idx, state))
                        }
                    }
                    offset += recLen
                case .incomplete, .invalid:
                    if let next = resync(bytes, after: offset) {
                        problems.append(.segmentCorrupt(path: path, offset: Int64(offset)))
                        log("\(path): corrupt record at offset \(offset), skipped \(next - offset) bytes")
                        offset = next
                    } else {
                        let dropped = Int64(got - offset)
                        problems.append(.tornTail(path: path, offset: Int64(offset), droppedBytes: dropped))
                        if mode == .repair {
                            if ftruncate(fd, off_t(offset)) != 0 {
                                return .failure(.io(path: path, operation: "ftruncate", errno: errno))
                            }
                            _ = fsync(fd)
                            log("\(path): torn tail at offset \(offset), truncated \(dropped) bytes")
                            seg.bytes = Int64(offset)
                        } else {
                            log("\(path): torn tail at offset \(offset) (\(dropped) bytes)")
                        }
                        break scan
                    }
                }
            }
            segments.append(seg)
        }

        index = [:]
        found.removeAll { live.entry($0.id) == nil }
        for i in found.indices {
            if let e = live.entry(found[i].id) { found[i].location = e.location; found[i].states = e.states }
        }
        found.sort { ($0.location.segment, $0.location.offset) < ($1.location.segment, $1.location.offset) }
        let messages = found
        let next = (numbers.last ?? 0) + 1
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
