import PeregrineIO

/// A message's identity in the spool: 128 bits, unique across loops and restarts
/// (`hi` is the writer's start time in ns, `lo` carries the loop index and a counter).
public struct MessageID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var hi: UInt64
    public var lo: UInt64
    @inlinable public init(hi: UInt64, lo: UInt64) { self.hi = hi; self.lo = lo }

    public static func < (a: MessageID, b: MessageID) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }

    /// 32 lowercase hex digits.
    public var description: String {
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return hex(hi) + hex(lo)
    }

    /// Parses the 32-hex-digit form produced by `description`.
    public init?(hex text: some StringProtocol) {
        guard text.utf8.count == 32 else { return nil }
        let s = String(text)
        guard let h = UInt64(s.prefix(16), radix: 16), let l = UInt64(s.suffix(16), radix: 16) else { return nil }
        self.hi = h; self.lo = l
    }
}

/// Where a recipient stands. Everything but `pending` is final.
public enum RecipientState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case pending = 0
    case delivered = 1
    case bounced = 2
    case expired = 3

    @inlinable public var isFinal: Bool { self != .pending }
    public var description: String {
        switch self {
        case .pending: return "pending"
        case .delivered: return "delivered"
        case .bounced: return "bounced"
        case .expired: return "expired"
        }
    }
}

/// RFC 3461 NOTIFY as a bit set (empty = not given).
public struct NotifyFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let never = NotifyFlags(rawValue: 1)
    public static let success = NotifyFlags(rawValue: 2)
    public static let failure = NotifyFlags(rawValue: 4)
    public static let delay = NotifyFlags(rawValue: 8)
}

/// RFC 3461 RET of MAIL FROM: what a bounce message returns of the original.
public enum DSNReturn: UInt8, Hashable, Sendable {
    /// Not given: the original's headers are returned (RFC 3461 §4.3 leaves it to the MTA).
    case unspecified = 0
    case full = 1
    case headers = 2
}

/// One envelope recipient: address bytes (no angle brackets), ORCPT as given, NOTIFY.
public struct SpoolRecipient: Hashable, Sendable {
    public var address: [UInt8]
    public var orcpt: [UInt8]
    public var notify: NotifyFlags
    public init(address: [UInt8], orcpt: [UInt8] = [], notify: NotifyFlags = []) {
        self.address = address; self.orcpt = orcpt; self.notify = notify
    }
    public init(_ address: String, orcpt: String = "", notify: NotifyFlags = []) {
        self.init(address: Array(address.utf8), orcpt: Array(orcpt.utf8), notify: notify)
    }
}

/// The envelope of a spooled message. Fields are bytes as received (the
/// hot path never decodes them into Strings).
public struct SpoolEnvelope: Hashable, Sendable {
    public var sender: [UInt8]
    public var recipients: [SpoolRecipient]
    public var vmta: [UInt8]
    public var jobID: [UInt8]
    public var envID: [UInt8]
    /// RET= of MAIL FROM.
    public var ret: DSNReturn
    /// Reception time, milliseconds since the Unix epoch.
    public var receivedAt: Int64
    /// VERP (`verp-default`, XVERP): one recipient per transaction, each
    /// with its own return path encoding it.
    public var verp: Bool
    /// The body is its own SMTP wire form: CRLF line ends only (no bare CR
    /// or LF), no line starting with a dot, ending with CRLF (or empty). Such
    /// a body dot-stuffs to itself, so delivery can send the record's bytes
    /// straight from the spool file (sendfile) followed by ".\r\n"; every
    /// other reader sees the same bytes as without the flag.
    public var wireForm: Bool

    public init(sender: [UInt8], recipients: [SpoolRecipient], vmta: [UInt8] = [], jobID: [UInt8] = [],
                envID: [UInt8] = [], ret: DSNReturn = .unspecified, receivedAt: Int64, verp: Bool = false,
                wireForm: Bool = false) {
        self.sender = sender; self.recipients = recipients; self.vmta = vmta
        self.jobID = jobID; self.envID = envID; self.ret = ret; self.receivedAt = receivedAt; self.verp = verp
        self.wireForm = wireForm
    }
}

/// A message body as a range of a spool segment, with a descriptor of its
/// own (`SpoolStreamWriter.bodyRange`): whoever receives it closes `file`.
public struct SpoolBodyRange: Sendable {
    public var file: FileHandle
    public var offset: Int64
    public var count: Int
    public init(file: FileHandle, offset: Int64, count: Int) { self.file = file; self.offset = offset; self.count = count }
}

/// Where a message record lives on disk: enough to read its body back.
public struct MessageLocation: Hashable, Sendable, CustomStringConvertible {
    /// Segment number (file `NNNNNN.seg` in the stream directory).
    public var segment: UInt32
    /// Offset of the record's header in the segment.
    public var offset: Int64
    /// Whole record length: header + payload.
    public var recordLength: UInt32
    /// Offset of the body from the start of the record.
    public var bodyOffset: UInt32

    @inlinable public var bodyLength: Int { Int(recordLength) - Int(bodyOffset) }

    public init(segment: UInt32, offset: Int64, recordLength: UInt32, bodyOffset: UInt32) {
        self.segment = segment; self.offset = offset; self.recordLength = recordLength; self.bodyOffset = bodyOffset
    }
    public var description: String { "seg \(segment) @\(offset) len \(recordLength)" }
}

/// Spool failures as values, with the context needed to act on them.
public enum SpoolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A record in the middle of a segment failed its checksum or framing; it was skipped.
    case segmentCorrupt(path: String, offset: Int64)
    /// A segment ended in a partial record (crash mid-write); truncated at `offset`.
    case tornTail(path: String, offset: Int64, droppedBytes: Int64)
    /// A segment the stream's catalogue lists (and no deletion record
    /// explains) is not there: deleted by hand or lost with its messages.
    case segmentMissing(path: String)
    /// A zero-length segment that is not the newest: its records are gone.
    case emptySegment(path: String)
    /// A damaged segment was moved aside to `to` (never truncated or deleted);
    /// its intact records were rewritten to `path`.
    case quarantined(path: String, to: String)
    /// A syscall failed.
    case io(path: String, operation: String, errno: Int32)
    /// An I/O operation of the event loop failed.
    case loop(path: String, IOError)
    /// The message is too large for one record, or the envelope is malformed.
    case invalidMessage(String)
    /// The record at a location does not hold what it should (wrong id, bad checksum).
    case badLocation(MessageLocation)
    /// The buffer given to `readBody` is smaller than the record.
    case bufferTooSmall(needed: Int)
    /// The writer failed earlier (write or fsync error) and accepts nothing more.
    case writerFailed(String)
    /// The message is not in the live set.
    case unknownMessage(MessageID)

    public var description: String {
        switch self {
        case .segmentCorrupt(let path, let offset): return "\(path): corrupt record at offset \(offset), skipped"
        case .tornTail(let path, let offset, let dropped):
            return "\(path): torn tail at offset \(offset), truncated \(dropped) bytes"
        case .segmentMissing(let path): return "\(path): missing (listed in the stream's catalogue, never deleted by the spool)"
        case .emptySegment(let path): return "\(path): empty segment (zero length) that is not the newest"
        case .quarantined(let path, let to): return "\(path): damaged, moved to \(to); its intact records were kept"
        case .io(let path, let op, let e): return "\(path): \(op) failed (errno \(e))"
        case .loop(let path, let err): return "\(path): \(err)"
        case .invalidMessage(let why): return "invalid message: \(why)"
        case .badLocation(let loc): return "no valid message record at \(loc)"
        case .bufferTooSmall(let n): return "buffer too small: need \(n) bytes"
        case .writerFailed(let why): return "spool writer failed earlier: \(why)"
        case .unknownMessage(let id): return "message \(id) is not in the spool"
        }
    }
}
