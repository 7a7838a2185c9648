import PeregrineIO
import PeregrineAccounting
import PeregrineSpool

/// A message as the scheduler holds it while any recipient is still pending:
/// envelope and scheduling state only. The body stays in the spool and is
/// read back from its spool stream by id when a delivery attempt is due.
///
/// A million of these wait in a backlog (issue #18), so the layout is kept
/// small: the envelope's text is one byte buffer (no String or array per
/// field or recipient), states are packed two bits per recipient, sizes are
/// 32-bit. Strings are made only when a field is read (a transaction, an
/// accounting line, a DSN), not while the message waits.
public final class QueuedMessage {
    public struct Recipient: Sendable, Equatable {
        public var address: String
        /// ORCPT as "addr-type;address", xtext-decoded (RFC 3461 §4.2).
        public var orcpt: String?
        /// NOTIFY (empty: not given, which means FAILURE,DELAY; RFC 3461 §4.1).
        public var notify: NotifyFlags
        public init(address: String, orcpt: String? = nil, notify: NotifyFlags = []) {
            self.address = address; self.orcpt = orcpt; self.notify = notify
        }
        /// The domain part, lowercased (the queue it belongs to).
        public var domain: String {
            guard let at = address.lastIndex(of: "@") else { return "" }
            return address[address.index(after: at)...].lowercased()
        }
    }

    public let id: MessageID
    /// Sender, job id, envelope id and every recipient's address, ORCPT and NOTIFY.
    let envelope: EnvelopeText
    public private(set) var states: RecipientStates
    private var pending: UInt32
    private let bodySize32: UInt32
    private let recordLength32: UInt32
    private let vmtaIndex: UInt32
    private var poolIndex: UInt32 = 0
    private let stream16: UInt16
    /// VERP: delivered one recipient per transaction, each with a return
    /// path that encodes it (`VERP.returnPath`). Kept in the spool record.
    public private(set) var verp = false
    public let ret: DSNReturn
    /// Wall-clock seconds since 1970 (accounting's timeQueued).
    public let receivedAtWall: Int64
    /// Monotonic nanoseconds (expiry).
    public let receivedAt: UInt64
    /// Wall-clock seconds of the first delivery attempt (accounting), 0 = none yet.
    public var firstAttemptWall: Int64 = 0

    public var vmta: String { NameTable.shared.name(vmtaIndex) }
    /// The `<virtual-mta-pool>` that picked `vmta` at injection (nil: named
    /// directly, or recovered from the spool, which does not keep it). Only
    /// such mail moves to another member when a source IP is disabled.
    public var pool: String? {
        get { poolIndex == 0 ? nil : NameTable.shared.name(poolIndex) }
        set { poolIndex = newValue.map { NameTable.shared.index($0) } ?? 0 }
    }

    public var sender: String { envelope.string(EnvelopeText.senderField) }
    public var jobId: String? { envelope.optionalString(EnvelopeText.jobField) }
    public var envId: String? { envelope.optionalString(EnvelopeText.envIDField) }
    public var recipients: RecipientList { RecipientList(envelope: envelope) }
    public var pendingCount: Int { Int(pending) }
    public var bodySize: Int { Int(bodySize32) }
    /// Size of the message's whole spool record: the buffer a body read needs.
    public var recordLength: Int { Int(recordLength32) }
    /// The spool stream (loop) whose segments hold the body.
    public var stream: Int { Int(stream16) }

    public convenience init(id: MessageID, sender: String, recipients: [Recipient], vmta: String, jobId: String?,
                            envId: String?, ret: DSNReturn = .unspecified, receivedAtWall: Int64, receivedAt: UInt64,
                            bodySize: Int, recordLength: Int? = nil, stream: Int, states: [RecipientState]? = nil,
                            verp: Bool = false) {
        let text = EnvelopeText.make(sender: Array(sender.utf8), jobID: Array((jobId ?? "").utf8), envID: Array((envId ?? "").utf8),
                                recipients: recipients.map { SpoolRecipient(address: Array($0.address.utf8),
                                                                            orcpt: Array(($0.orcpt ?? "").utf8), notify: $0.notify) })
        var packed = RecipientStates(count: recipients.count)
        if let states { for (i, s) in states.enumerated() where i < recipients.count { packed[i] = s } }
        self.init(id: id, envelope: text, vmta: vmta, ret: ret, receivedAtWall: receivedAtWall, receivedAt: receivedAt,
                  bodySize: bodySize, recordLength: recordLength ?? bodySize, stream: stream, states: packed)
        self.verp = verp
    }

    /// From a spooled envelope's bytes, without decoding them.
    public convenience init(id: MessageID, envelope: SpoolEnvelope, vmta: String, receivedAtWall: Int64, receivedAt: UInt64,
                            bodySize: Int, recordLength: Int, stream: Int, states: RecipientStates?) {
        self.init(id: id, envelope: EnvelopeText.make(sender: envelope.sender, jobID: envelope.jobID, envID: envelope.envID,
                                                 recipients: envelope.recipients),
                  vmta: vmta, ret: envelope.ret, receivedAtWall: receivedAtWall, receivedAt: receivedAt, bodySize: bodySize,
                  recordLength: recordLength, stream: stream, states: states ?? RecipientStates(count: envelope.recipients.count))
        self.verp = envelope.verp
    }

    convenience init(id: MessageID, envelope: EnvelopeText, vmta: String, ret: DSNReturn, receivedAtWall: Int64,
                     receivedAt: UInt64, bodySize: Int, recordLength: Int, stream: Int, states: RecipientStates) {
        self.init(id: id, envelope: envelope, vmtaIndex: NameTable.shared.index(vmta), ret: ret, receivedAtWall: receivedAtWall,
                  receivedAt: receivedAt, bodySize: bodySize, recordLength: recordLength, stream: stream, states: states)
    }

    init(id: MessageID, envelope: EnvelopeText, vmtaIndex: UInt32, ret: DSNReturn, receivedAtWall: Int64, receivedAt: UInt64,
         bodySize: Int, recordLength: Int, stream: Int, states: RecipientStates) {
        self.id = id
        self.envelope = envelope
        self.vmtaIndex = vmtaIndex
        self.ret = ret
        self.receivedAtWall = receivedAtWall
        self.receivedAt = receivedAt
        self.bodySize32 = UInt32(clamping: bodySize)
        self.recordLength32 = UInt32(clamping: recordLength)
        self.stream16 = UInt16(clamping: stream)
        self.states = states
        self.pending = UInt32(states.pendingCount)
    }

    /// A copy for another loop holding only `recipients` as pending (the others
    /// belong to other loops' queues and are marked final in this copy only).
    /// The envelope text is immutable and shared, not copied.
    public func part(keeping recipients: [Int]) -> QueuedMessage {
        var s = RecipientStates(count: states.count)
        for i in 0..<states.count { s[i] = .delivered }
        for i in recipients where i >= 0 && i < states.count { s[i] = states[i] }
        let copy = QueuedMessage(id: id, envelope: envelope, vmtaIndex: vmtaIndex, ret: ret, receivedAtWall: receivedAtWall,
                                 receivedAt: receivedAt, bodySize: bodySize, recordLength: recordLength, stream: stream,
                                 states: s)
        copy.poolIndex = poolIndex
        copy.verp = verp
        return copy
    }

    /// Records a final state; returns false if the recipient was already final
    /// (a duplicate report after a crash-recovery replay, for instance).
    @discardableResult
    public func finish(recipient index: Int, as state: RecipientState) -> Bool {
        guard index >= 0, index < states.count, states[index] == .pending, state != .pending else { return false }
        states[index] = state
        pending -= 1
        return true
    }

    public var isComplete: Bool { pending == 0 }

    /// The envelope's recipients, decoded one at a time when read.
    public struct RecipientList: RandomAccessCollection {
        let envelope: EnvelopeText
        public var startIndex: Int { 0 }
        public var endIndex: Int { envelope.recipientCount }
        public subscript(_ i: Int) -> Recipient {
            Recipient(address: envelope.string(EnvelopeText.addressField(i)),
                      orcpt: envelope.optionalString(EnvelopeText.orcptField(i)), notify: envelope.notify(i))
        }
        /// Recipient `i`'s domain, lowercased, without decoding the whole recipient.
        public func domain(_ i: Int) -> String { envelope.domain(ofField: EnvelopeText.addressField(i)) }
        /// Recipient `i`'s NOTIFY, without decoding its address or ORCPT.
        public func notify(_ i: Int) -> NotifyFlags { envelope.notify(i) }
    }
}

/// A message's envelope text in one allocation (no array header: the
/// bytes follow the object). Layout: one NOTIFY byte per recipient, then the
/// end offset of each field — sender, job id, envelope id, then address and
/// ORCPT per recipient — as UInt16 (UInt32 when the text is 64 KB or more),
/// then the fields' bytes. An empty job id, envelope id or ORCPT reads as nil
/// (the spool keeps them as empty fields too). The header is the recipient
/// count, its top bit set for 32-bit offsets.
final class EnvelopeText: ManagedBuffer<UInt32, UInt8> {
    static let senderField = 0
    static let jobField = 1
    static let envIDField = 2
    static func addressField(_ r: Int) -> Int { 3 + 2 * r }
    static func orcptField(_ r: Int) -> Int { 4 + 2 * r }
    private static let wideFlag: UInt32 = 1 << 31

    static func make(sender: [UInt8], jobID: [UInt8], envID: [UInt8], recipients: [SpoolRecipient]) -> EnvelopeText {
        let n = recipients.count
        let fields = 3 + 2 * n
        var text = sender.count + jobID.count + envID.count
        for r in recipients { text += r.address.count + r.orcpt.count }
        let wide = n + 2 * fields + text > Int(UInt16.max)
        let width = wide ? 4 : 2
        let textStart = n + width * fields
        let size = textStart + text
        let buffer = EnvelopeText.create(minimumCapacity: size) { _ in UInt32(n) | (wide ? wideFlag : 0) }
        buffer.withUnsafeMutablePointerToElements { p in
            for (i, r) in recipients.enumerated() { p[i] = r.notify.rawValue }
            var end = textStart
            var slot = n
            func field(_ f: [UInt8]) {
                p.advanced(by: end).update(from: f, count: f.count)
                end += f.count
                for k in 0..<width { p[slot + k] = UInt8(truncatingIfNeeded: end >> (8 * k)) }
                slot += width
            }
            field(sender); field(jobID); field(envID)
            for r in recipients { field(r.address); field(r.orcpt) }
        }
        return unsafeDowncast(buffer, to: EnvelopeText.self)
    }

    var recipientCount: Int { Int(header & ~Self.wideFlag) }

    func notify(_ r: Int) -> NotifyFlags {
        withUnsafeMutablePointerToElements { NotifyFlags(rawValue: $0[r]) }
    }

    /// Runs `body` over a field's bytes.
    func withField<R>(_ field: Int, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        let n = recipientCount
        let width = header & Self.wideFlag != 0 ? 4 : 2
        return withUnsafeMutablePointerToElements { p in
            func end(_ f: Int) -> Int {
                var v = 0
                for k in 0..<width { v |= Int(p[n + width * f + k]) << (8 * k) }
                return v
            }
            let start = field == 0 ? n + width * (3 + 2 * n) : end(field - 1)
            return body(UnsafeBufferPointer(start: p + start, count: end(field) - start))
        }
    }

    func string(_ field: Int) -> String { withField(field) { String(decoding: $0, as: UTF8.self) } }

    func optionalString(_ field: Int) -> String? {
        withField(field) { $0.isEmpty ? nil : String(decoding: $0, as: UTF8.self) }
    }

    /// The part after the last "@", lowercased (as QueuedMessage.Recipient.domain).
    /// Runs twice per message (dispatch, submit): an ASCII domain is lowered
    /// byte by byte into the String's own storage (one allocation past 15
    /// bytes, none below), not decoded and then copied by `lowercased()`.
    /// Plain index loops: the generic `lastIndex(of:)`/`allSatisfy` allocated
    /// per byte in the debug build the allocation test runs.
    func domain(ofField field: Int) -> String {
        withField(field) { b in
            var at = b.count - 1
            while at >= 0 && b[at] != UInt8(ascii: "@") { at -= 1 }
            guard at >= 0 else { return "" }
            let start = at + 1, count = b.count - start
            var ascii = true
            for i in start..<b.count where b[i] >= 0x80 { ascii = false; break }
            guard ascii else {
                return String(decoding: UnsafeBufferPointer(rebasing: b[start...]), as: UTF8.self).lowercased()
            }
            return String(unsafeUninitializedCapacity: count) { out in
                for i in 0..<count {
                    let c = b[start + i]
                    out[i] = c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c
                }
                return count
            }
        }
    }

    /// Appends a field's bytes to an accounting line as one CSV field (quoted
    /// as `field(_: String)` would): no String is made for the sender, an
    /// address or an id on the way to the accounting file.
    func appendField(_ field: Int, to line: inout AccountingLineEncoder) {
        withField(field) { b in
            let start = line.beginField()
            for i in 0..<b.count { line.raw(b[i]) }
            line.endField(start)
        }
    }
}

/// VMTA and pool names, each kept once for the whole process: a queued
/// message holds a 32-bit index instead of a 16-byte String. The names come
/// from the configuration (and from spooled messages), so the table stays small.
final class NameTable: Sendable {
    static let shared = NameTable()
    private let state = Locked<(names: [String], indexes: [String: UInt32])>((names: [""], indexes: ["": 0]))

    func index(_ name: String) -> UInt32 {
        state.withLock { s in
            if let i = s.indexes[name] { return i }
            let i = UInt32(s.names.count)
            s.names.append(name)
            s.indexes[name] = i
            return i
        }
    }

    func name(_ index: UInt32) -> String { state.withLock { $0.names[Int(index)] } }
}

/// One transaction's worth of work: a message and its recipients in one queue
/// (at most max-rcpt-per-transaction of them).
///
/// 24 bytes: the usual run of consecutive recipient indexes (one recipient,
/// or a domain's recipients in order) is kept inline, not as an array.
public struct DeliveryItem {
    public let message: QueuedMessage
    private var first: UInt16
    private var runLength: UInt16
    private var attemptCount: UInt32
    /// Indexes that are not one short consecutive run (nil when they are).
    private var list: [Int]?

    public init(message: QueuedMessage, recipients: [Int], attempts: Int = 0) {
        self.message = message
        first = 0; runLength = 0; list = nil
        attemptCount = UInt32(clamping: attempts)
        self.recipients = RecipientIndexes(recipients)
    }

    /// Failed attempts so far (selects the retry-after step).
    public var attempts: Int {
        get { Int(attemptCount) }
        set { attemptCount = UInt32(clamping: newValue) }
    }

    /// Indexes into `message.recipients`.
    public var recipients: RecipientIndexes {
        get { RecipientIndexes(first: first, runLength: runLength, list: list) }
        set { first = newValue.first; runLength = newValue.runLength; list = newValue.list }
    }
}

/// Recipient indexes of a delivery item: a run `first ..< first + runLength`
/// when they are consecutive and small, else an array.
public struct RecipientIndexes: RandomAccessCollection, Equatable, ExpressibleByArrayLiteral {
    fileprivate var first: UInt16
    fileprivate var runLength: UInt16
    fileprivate var list: [Int]?

    fileprivate init(first: UInt16, runLength: UInt16, list: [Int]?) {
        self.first = first; self.runLength = runLength; self.list = list
    }

    public init(_ indexes: [Int]) {
        if let lo = indexes.first, lo >= 0, lo + indexes.count <= Int(UInt16.max),
           indexes.indices.allSatisfy({ indexes[$0] == lo + $0 }) {
            self.init(first: UInt16(lo), runLength: UInt16(indexes.count), list: nil)
        } else if indexes.isEmpty {
            self.init(first: 0, runLength: 0, list: nil)
        } else {
            self.init(first: 0, runLength: 0, list: indexes)
        }
    }

    public init(arrayLiteral elements: Int...) { self.init(elements) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { list?.count ?? Int(runLength) }
    public subscript(_ k: Int) -> Int {
        if let list { return list[k] }
        precondition(k >= 0 && k < Int(runLength), "recipient index out of range")
        return Int(first) + k
    }

    public static func == (a: RecipientIndexes, b: RecipientIndexes) -> Bool { a.elementsEqual(b) }
}
