/// On-disk framing of spool records.
///
/// ```
/// header (16 bytes, little-endian)
///   0  magic     UInt32  0x31475250 ("PRG1")
///   4  kind      UInt8   1 = message, 2 = outcome, 3 = segment start, 4 = segment deleted, 5 = padding
///   5  version   UInt8   0; for a message record, 1 when its envelope has a RET
///                        byte, 2 when it has a RET byte (0 = none) and a flags byte
///   6  reserved  UInt16  0
///   8  length    UInt32  payload length
///  12  crc       UInt32  CRC32C of header bytes 4..<12, then the payload
/// payload
///   message: id.hi u64, id.lo u64, receivedAt i64,
///            sender, vmta, jobID, envID (each varint length + bytes),
///            [version 1: RET u8 (1 FULL, 2 HDRS)],
///            [version 2: RET u8 (0 none, 1 FULL, 2 HDRS), flags u8 (bit 0: VERP,
///             bit 1: the body is its own SMTP wire form, `SpoolEnvelope.wireForm`)],
///            recipient count varint, per recipient: address, orcpt
///            (varint length + bytes), notify u8, state u8; then the body
///            (the rest of the payload).
///   outcome: id.hi u64, id.lo u64, recipient index u32, state u8
///   segment start (first record of every segment the writer creates):
///            count u32, then count segment numbers u32: the stream's other
///            segments present when this one was created (its catalogue)
///   segment deleted: segment number u32 (made durable before the unlink)
///   padding: zeros, ignored (the writer's probe that the disk takes writes again)
/// ```
/// A message without RET is written as version 0, byte for byte the format
/// spools written before RET was kept, so old spools recover unchanged and
/// the hot path pays nothing for it; likewise a message without flags (VERP)
/// is written as version 0 or 1, and only a flagged one as version 2.
/// The wire-form bit (bit 1) was added after VERP: a writer before it never
/// sets it, so its spools recover unchanged; a reader before it refuses a
/// record with the bit (unknown flag), so a spool written with it cannot be
/// read by an older Peregrine.
/// The catalogue and the deletion records let recovery tell a segment the
/// writer removed from one that went missing (deleted by hand, lost).
/// A reader accepts a record only if the magic, kind, length bound and
/// checksum all agree, which is also how it resynchronises after a corrupt
/// record: scan forward for the next offset where they do.
public enum SpoolRecordFormat {
    public static let magic: UInt32 = 0x3147_5250
    public static let headerSize = 16
    /// Sanity bound on one record's payload (a message is one record).
    public static let maxPayload = 512 * 1024 * 1024
    public static let outcomePayloadSize = 21
    public static let outcomeRecordSize = headerSize + outcomePayloadSize
    public static let segmentDeletedRecordSize = headerSize + 4

    /// Size of a segment-start record listing `count` segments.
    public static func segmentStartRecordSize(count: Int) -> Int { headerSize + 4 + 4 * count }

    public enum Kind: UInt8, Sendable {
        case message = 1
        case outcome = 2
        case segmentStart = 3
        case segmentDeleted = 4
        case padding = 5
    }

    // MARK: Sizes

    @inlinable static func varintSize(_ v: Int) -> Int {
        var n = 1
        var x = UInt64(v) >> 7
        while x != 0 { n += 1; x >>= 7 }
        return n
    }

    @inlinable static func fieldSize(_ bytes: [UInt8]) -> Int { varintSize(bytes.count) + bytes.count }

    /// Payload bytes of a message record before the body.
    public static func envelopeSize(_ env: SpoolEnvelope) -> Int {
        var n = 24 + fieldSize(env.sender) + fieldSize(env.vmta) + fieldSize(env.jobID) + fieldSize(env.envID)
        n += optionBytes(env)
        n += varintSize(env.recipients.count)
        for r in env.recipients { n += fieldSize(r.address) + fieldSize(r.orcpt) + 2 }
        return n
    }

    /// Bit 0 of a version-2 message record's flags byte.
    static let verpFlag: UInt8 = 1
    /// Bit 1: the body is its own wire form (`SpoolEnvelope.wireForm`).
    static let wireFormFlag: UInt8 = 2

    /// The header version of a message record: 0 (no options), 1 (RET), 2 (RET and flags).
    static func messageVersion(_ env: SpoolEnvelope) -> UInt8 {
        env.verp || env.wireForm ? 2 : env.ret != .unspecified ? 1 : 0
    }

    /// Bytes between envID and the recipient count.
    static func optionBytes(_ env: SpoolEnvelope) -> Int {
        switch messageVersion(env) { case 2: return 2; case 1: return 1; default: return 0 }
    }

    // MARK: Encoding

    /// Encodes a whole message record at `out` (which must have room for
    /// `headerSize + envelopeSize(env) + body.count` bytes). Returns the record length.
    /// `states` (optional) gives per-recipient states (compaction rewrites); default all pending.
    @discardableResult
    public static func encodeMessage(id: MessageID, envelope env: SpoolEnvelope, states: RecipientStates?,
                                     body: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int {
        encodeMessage(id: id, envelope: env, states: states, into: out) { w in w.bytes(body) }
    }

    /// Same, with the body given as consecutive chunks (gathered, no concatenation first).
    @discardableResult
    public static func encodeMessage(id: MessageID, envelope env: SpoolEnvelope, states: RecipientStates?,
                                     bodyChunks: [UnsafeRawBufferPointer], into out: UnsafeMutableRawPointer) -> Int {
        encodeMessage(id: id, envelope: env, states: states, into: out) { w in for c in bodyChunks { w.bytes(c) } }
    }

    @inline(__always)
    static func encodeMessage(id: MessageID, envelope env: SpoolEnvelope, states: RecipientStates?,
                              into out: UnsafeMutableRawPointer, body: (inout ByteWriter) -> Void) -> Int {
        var w = ByteWriter(out + headerSize)
        w.u64(id.hi); w.u64(id.lo); w.u64(UInt64(bitPattern: env.receivedAt))
        w.field(env.sender); w.field(env.vmta); w.field(env.jobID); w.field(env.envID)
        let version = messageVersion(env)
        if version >= 1 { w.u8(env.ret.rawValue) }
        if version == 2 { w.u8((env.verp ? verpFlag : 0) | (env.wireForm ? wireFormFlag : 0)) }
        w.varint(env.recipients.count)
        for (i, r) in env.recipients.enumerated() {
            w.field(r.address); w.field(r.orcpt); w.u8(r.notify.rawValue)
            w.u8(states?[i].rawValue ?? 0)
        }
        body(&w)
        let payload = w.position
        finishHeader(kind: .message, payloadLength: payload, at: out, version: version)
        return headerSize + payload
    }

    /// Encodes an outcome record (37 bytes) at `out`.
    public static func encodeOutcome(id: MessageID, recipient: Int, state: RecipientState,
                                     into out: UnsafeMutableRawPointer) {
        var w = ByteWriter(out + headerSize)
        w.u64(id.hi); w.u64(id.lo); w.u32(UInt32(truncatingIfNeeded: recipient)); w.u8(state.rawValue)
        finishHeader(kind: .outcome, payloadLength: outcomePayloadSize, at: out)
    }

    /// Encodes a segment-start record listing `segments` at `out`.
    public static func encodeSegmentStart(segments: [UInt32], into out: UnsafeMutableRawPointer) {
        var w = ByteWriter(out + headerSize)
        w.u32(UInt32(segments.count))
        for n in segments { w.u32(n) }
        finishHeader(kind: .segmentStart, payloadLength: 4 + 4 * segments.count, at: out)
    }

    /// Encodes a segment-deleted record for segment `number` at `out`.
    public static func encodeSegmentDeleted(number: UInt32, into out: UnsafeMutableRawPointer) {
        var w = ByteWriter(out + headerSize)
        w.u32(number)
        finishHeader(kind: .segmentDeleted, payloadLength: 4, at: out)
    }

    /// Encodes a padding record of `payloadLength` zero bytes at `out`.
    public static func encodePadding(payloadLength: Int, into out: UnsafeMutableRawPointer) {
        (out + headerSize).initializeMemory(as: UInt8.self, repeating: 0, count: payloadLength)
        finishHeader(kind: .padding, payloadLength: payloadLength, at: out)
    }

    static func finishHeader(kind: Kind, payloadLength: Int, at out: UnsafeMutableRawPointer, version: UInt8 = 0) {
        out.storeBytes(of: magic.littleEndian, as: UInt32.self)
        out.storeBytes(of: kind.rawValue, toByteOffset: 4, as: UInt8.self)
        out.storeBytes(of: version, toByteOffset: 5, as: UInt8.self)
        out.storeBytes(of: UInt16(0), toByteOffset: 6, as: UInt16.self)
        out.storeBytes(of: UInt32(payloadLength).littleEndian, toByteOffset: 8, as: UInt32.self)
        var crc = CRC32C.checksum(UnsafeRawBufferPointer(start: out + 4, count: 8))
        crc = CRC32C.checksum(UnsafeRawBufferPointer(start: out + headerSize, count: payloadLength), continuing: crc)
        out.storeBytes(of: crc.littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    // MARK: Decoding

    public enum Frame {
        /// A whole, verified record: kind and payload length.
        case record(Kind, payloadLength: Int)
        /// Not enough bytes to tell (or to hold the declared record).
        case incomplete(needed: Int)
        /// Bytes here are not a valid record.
        case invalid
    }

    /// Checks the record starting at `bytes[0]`: magic, kind, length and checksum.
    public static func frame(_ bytes: UnsafeRawBufferPointer) -> Frame {
        guard bytes.count >= headerSize, let base = bytes.baseAddress else {
            if bytes.count >= 4, bytes.loadUnaligned(as: UInt32.self).littleEndian != magic { return .invalid }
            return .incomplete(needed: headerSize)
        }
        guard base.loadUnaligned(as: UInt32.self).littleEndian == magic,
              let kind = Kind(rawValue: base.load(fromByteOffset: 4, as: UInt8.self)),
              base.load(fromByteOffset: 5, as: UInt8.self) == 0
                || (kind == .message && base.load(fromByteOffset: 5, as: UInt8.self) <= 2),
              base.loadUnaligned(fromByteOffset: 6, as: UInt16.self) == 0 else { return .invalid }
        let length = Int(base.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian)
        guard length <= maxPayload else { return .invalid }
        if kind == .outcome && length != outcomePayloadSize { return .invalid }
        if kind == .message && length < 25 { return .invalid }
        if kind == .segmentStart && (length < 4 || length % 4 != 0) { return .invalid }
        if kind == .segmentDeleted && length != 4 { return .invalid }
        guard bytes.count >= headerSize + length else { return .incomplete(needed: headerSize + length) }
        let stored = base.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
        var crc = CRC32C.checksum(UnsafeRawBufferPointer(start: base + 4, count: 8))
        crc = CRC32C.checksum(UnsafeRawBufferPointer(start: base + headerSize, count: length), continuing: crc)
        return crc == stored ? .record(kind, payloadLength: length) : .invalid
    }

    /// A decoded message record (envelope copied out; body stays in place).
    public struct DecodedMessage {
        public var id: MessageID
        public var envelope: SpoolEnvelope
        public var states: RecipientStates
        /// Offset of the body from the record start.
        public var bodyOffset: Int
    }

    /// Decodes a verified message record (header and payload; the header's
    /// version says whether the envelope has a RET byte).
    public static func decodeMessage(record: UnsafeRawBufferPointer) -> DecodedMessage? {
        guard record.count >= headerSize else { return nil }
        return decodeMessage(payload: UnsafeRawBufferPointer(rebasing: record[headerSize...]), version: record[5])
    }

    /// Decodes a verified message payload written with header `version`.
    /// Nil if the payload's inner structure is malformed.
    public static func decodeMessage(payload: UnsafeRawBufferPointer, version: UInt8 = 0) -> DecodedMessage? {
        var r = ByteReader(payload)
        guard let hi = r.u64(), let lo = r.u64(), let t = r.u64(),
              let sender = r.field(), let vmta = r.field(), let job = r.field(), let envid = r.field() else { return nil }
        var ret = DSNReturn.unspecified
        var verp = false
        var wireForm = false
        if version == 1 {
            guard let b = r.u8(), let v = DSNReturn(rawValue: b), v != .unspecified else { return nil }
            ret = v
        } else if version == 2 {
            // Unknown flag bits are refused: they would mean a newer writer's option this reader would drop.
            guard let b = r.u8(), let v = DSNReturn(rawValue: b), let flags = r.u8(),
                  flags & ~(verpFlag | wireFormFlag) == 0 else { return nil }
            ret = v
            verp = flags & verpFlag != 0
            wireForm = flags & wireFormFlag != 0
        }
        guard let count = r.varint(), count <= payload.count else { return nil }
        var rcpts: [SpoolRecipient] = []
        rcpts.reserveCapacity(count)
        var states = RecipientStates(count: count)
        for i in 0..<count {
            guard let a = r.field(), let o = r.field(), let n = r.u8(), let s = r.u8(),
                  let st = RecipientState(rawValue: s) else { return nil }
            rcpts.append(SpoolRecipient(address: a, orcpt: o, notify: NotifyFlags(rawValue: n)))
            if st != .pending { states[i] = st }
        }
        let env = SpoolEnvelope(sender: sender, recipients: rcpts, vmta: vmta, jobID: job, envID: envid, ret: ret,
                                receivedAt: Int64(bitPattern: t), verp: verp, wireForm: wireForm)
        return DecodedMessage(id: MessageID(hi: hi, lo: lo), envelope: env, states: states,
                              bodyOffset: headerSize + r.position)
    }

    /// Whether the message record starting at `prefix[0]` (its header and
    /// envelope, at least) is message `id` with the wire-form flag: read from
    /// the record's first bytes only, without decoding the envelope. False
    /// for anything else (another record, a torn or foreign one).
    public static func isWireFormMessage(prefix: UnsafeRawBufferPointer, id: MessageID) -> Bool {
        guard prefix.count >= headerSize + 24, prefix.loadUnaligned(as: UInt32.self).littleEndian == magic,
              prefix[4] == Kind.message.rawValue, prefix[5] == 2,
              messageID(payload: UnsafeRawBufferPointer(rebasing: prefix[headerSize...])) == id else { return false }
        var r = ByteReader(UnsafeRawBufferPointer(rebasing: prefix[(headerSize + 24)...]))
        for _ in 0 ..< 4 {   // sender, vmta, jobID, envID
            guard let n = r.varint(), n <= r.remaining else { return false }
            r.position += n
        }
        guard r.u8() != nil, let flags = r.u8() else { return false }   // RET, flags
        return flags & wireFormFlag != 0
    }

    /// Reads only the id of a message payload (no allocation).
    public static func messageID(payload: UnsafeRawBufferPointer) -> MessageID? {
        var r = ByteReader(payload)
        guard let hi = r.u64(), let lo = r.u64() else { return nil }
        return MessageID(hi: hi, lo: lo)
    }

    /// The catalogue of a verified segment-start payload.
    public static func decodeSegmentStart(payload: UnsafeRawBufferPointer) -> [UInt32]? {
        var r = ByteReader(payload)
        guard let count = r.u32(), Int(count) * 4 == r.remaining else { return nil }
        var out: [UInt32] = []
        out.reserveCapacity(Int(count))
        for _ in 0 ..< count { if let n = r.u32() { out.append(n) } }
        return out
    }

    public static func decodeSegmentDeleted(payload: UnsafeRawBufferPointer) -> UInt32? {
        var r = ByteReader(payload)
        return r.u32()
    }

    public static func decodeOutcome(payload: UnsafeRawBufferPointer) -> (MessageID, Int, RecipientState)? {
        var r = ByteReader(payload)
        guard let hi = r.u64(), let lo = r.u64(), let idx = r.u32(), let s = r.u8(),
              let st = RecipientState(rawValue: s) else { return nil }
        return (MessageID(hi: hi, lo: lo), Int(idx), st)
    }
}

/// Unchecked little-endian writer: the caller sized the buffer.
@usableFromInline
struct ByteWriter {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline var position = 0
    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }
    @inlinable mutating func u8(_ v: UInt8) { base.storeBytes(of: v, toByteOffset: position, as: UInt8.self); position += 1 }
    @inlinable mutating func u32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { (base + position).copyMemory(from: $0.baseAddress!, byteCount: 4) }
        position += 4
    }
    @inlinable mutating func u64(_ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { (base + position).copyMemory(from: $0.baseAddress!, byteCount: 8) }
        position += 8
    }
    @inlinable mutating func varint(_ v: Int) {
        var x = UInt64(v)
        while x >= 0x80 { u8(UInt8(x & 0x7F) | 0x80); x >>= 7 }
        u8(UInt8(x))
    }
    @inlinable mutating func bytes(_ b: UnsafeRawBufferPointer) {
        if let src = b.baseAddress, b.count > 0 { (base + position).copyMemory(from: src, byteCount: b.count) }
        position += b.count
    }
    @inlinable mutating func field(_ b: [UInt8]) {
        varint(b.count)
        b.withUnsafeBytes { bytes($0) }
    }
}

/// Bounds-checked little-endian reader over bytes from disk: nil, never a trap.
@usableFromInline
struct ByteReader {
    @usableFromInline let buf: UnsafeRawBufferPointer
    @usableFromInline var position = 0
    @inlinable init(_ buf: UnsafeRawBufferPointer) { self.buf = buf }
    @inlinable var remaining: Int { buf.count - position }
    @inlinable mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return buf[position]
    }
    @inlinable mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { position += 4 }
        return buf.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian
    }
    @inlinable mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { position += 8 }
        return buf.loadUnaligned(fromByteOffset: position, as: UInt64.self).littleEndian
    }
    @inlinable mutating func varint() -> Int? {
        var x: UInt64 = 0
        var shift: UInt64 = 0
        while shift < 63 {
            guard let b = u8() else { return nil }
            x |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return x <= UInt64(Int32.max) ? Int(x) : nil }
            shift += 7
        }
        return nil
    }
    @inlinable mutating func field() -> [UInt8]? {
        guard let n = varint(), n <= remaining else { return nil }
        defer { position += n }
        return Array(UnsafeRawBufferPointer(rebasing: buf[position ..< position + n]))
    }
}
