#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// Writes segment files with plain blocking I/O: for tests, tools and
/// benchmark set-up (building a large spool quickly). The daemon uses
/// `SpoolWriter`, which goes through the event loop with group commit.
public final class SpoolSyncWriter {
    public let directory: String
    public private(set) var segment: UInt32
    public private(set) var offset: Int64 = 0
    private var fd: Int32 = -1
    private var buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    public let segmentSize: Int64
    private let firstSegment: UInt32

    public init(directory: String, firstSegment: UInt32 = 1, segmentSize: Int64 = 64 << 20) throws(SpoolError) {
        self.directory = directory
        self.segment = firstSegment
        self.segmentSize = segmentSize
        self.firstSegment = firstSegment
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        try SpoolFiles.makeDirectory(directory)
        try openSegment()
    }

    deinit {
        _ = try? flush()
        if fd >= 0 { close(fd) }
        buffer.deallocate()
    }

    public var path: String { SpoolRecovery.segmentPath(directory: directory, number: segment) }

    private func openSegment() throws(SpoolError) {
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw .io(path: path, operation: "open", errno: errno) }
        offset = 0
        // The catalogue, as SpoolWriter starts every segment: the ones this writer made before.
        let earlier = Array(firstSegment ..< segment)
        try withSpace(SpoolRecordFormat.segmentStartRecordSize(count: earlier.count)) { p in
            SpoolRecordFormat.encodeSegmentStart(segments: earlier, into: p)
            return SpoolRecordFormat.segmentStartRecordSize(count: earlier.count)
        }
    }

    /// Starts a new segment file.
    public func roll() throws(SpoolError) {
        try flush()
        close(fd)
        segment += 1
        try openSegment()
    }

    @discardableResult
    public func append(id: MessageID, envelope: SpoolEnvelope, body: UnsafeRawBufferPointer,
                       states: RecipientStates? = nil) throws(SpoolError) -> MessageLocation {
        let envSize = SpoolRecordFormat.envelopeSize(envelope)
        let len = SpoolRecordFormat.headerSize + envSize + body.count
        if offset + Int64(used) > Int64(SpoolRecordFormat.segmentStartRecordSize(count: Int(segment - firstSegment)))
            && offset + Int64(used) + Int64(len) > segmentSize { try roll() }
        let loc = MessageLocation(segment: segment, offset: offset + Int64(used), recordLength: UInt32(len),
                                  bodyOffset: UInt32(SpoolRecordFormat.headerSize + envSize))
        try withSpace(len) { p in
            SpoolRecordFormat.encodeMessage(id: id, envelope: envelope, states: states, body: body, into: p)
        }
        return loc
    }

    public func append(id: MessageID, envelope: SpoolEnvelope, body: [UInt8]) throws(SpoolError) -> MessageLocation {
        let r: Result<MessageLocation, SpoolError> = body.withUnsafeBytes { b in
            do throws(SpoolError) { return .success(try append(id: id, envelope: envelope, body: b)) }
            catch { return .failure(error) }
        }
        return try r.get()
    }

    public func appendOutcome(id: MessageID, recipient: Int, state: RecipientState) throws(SpoolError) {
        try withSpace(SpoolRecordFormat.outcomeRecordSize) { p in
            SpoolRecordFormat.encodeOutcome(id: id, recipient: recipient, state: state, into: p)
            return SpoolRecordFormat.outcomeRecordSize
        }
    }

    /// Records that segment `number` was deleted (as `SpoolWriter` does before
    /// unlinking one), so recovery does not report it missing.
    public func appendSegmentDeleted(_ number: UInt32) throws(SpoolError) {
        try withSpace(SpoolRecordFormat.segmentDeletedRecordSize) { p in
            SpoolRecordFormat.encodeSegmentDeleted(number: number, into: p)
            return SpoolRecordFormat.segmentDeletedRecordSize
        }
    }

    private func withSpace(_ len: Int, _ body: (UnsafeMutableRawPointer) -> Int) throws(SpoolError) {
        if used + len > buffer.count { try flush() }
        if len > buffer.count {
            let big = UnsafeMutableRawBufferPointer.allocate(byteCount: len, alignment: 16)
            defer { big.deallocate() }
            _ = body(big.baseAddress!)
            try writeAll(UnsafeRawBufferPointer(big))
            return
        }
        _ = body(buffer.baseAddress! + used)
        used += len
    }

    private func writeAll(_ b: UnsafeRawBufferPointer) throws(SpoolError) {
        do {
            try Posix.writeAll(fd, b, at: offset)
        } catch {
            throw .io(path: path, operation: "write", errno: error.errnoValue ?? EIO)
        }
        offset += Int64(b.count)
    }

    public func flush() throws(SpoolError) {
        guard used > 0 else { return }
        let n = used
        used = 0
        try writeAll(UnsafeRawBufferPointer(rebasing: buffer[0 ..< n]))
    }

    public func sync() throws(SpoolError) {
        try flush()
        if fdatasync(fd) != 0 { throw .io(path: path, operation: "fdatasync", errno: errno) }
    }
}

/// Small filesystem helpers shared by the spool pieces.
public enum SpoolFiles {
    /// mkdir -p.
    public static func makeDirectory(_ path: String) throws(SpoolError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .io(path: prefix, operation: "mkdir", errno: errno)
            }
        }
    }

    /// fsync on a directory so that a created or removed entry is durable.
    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    /// The stream directory of loop `index` under a spool directory.
    public static func streamDirectory(spool: String, loop index: Int) -> String { spool + "/loop-\(index)" }
}
