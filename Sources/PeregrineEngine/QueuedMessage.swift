import PeregrineIO
import PeregrineAccounting
import PeregrineSpool

/// A message as the scheduler holds it while any recipient is still pending:
/// envelope and scheduling state only. The body stays in the spool and is
/// read back from its spool stream by id when a delivery attempt is due.
///
/// A million of these wait in a backlog (issue #18), so the layout is kept
/// small: one heap block per message, the scheduling fields first and the
/// envelope's bytes right after them (no second object, no array or String
/// per field or recipient; the layout is `EnvelopeText`'s); states are packed
/// two bits per recipient, sizes and wall-clock times are 32-bit. Strings are
/// made only when a field is read (a transaction, an accounting line, a DSN),
/// not while the message waits.
public final class QueuedMessage: ManagedBuffer<QueuedMessageFields, UInt8>, QueuedMessageAllocating {
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

    public var id: MessageID { header.id }
    /// Sender, job id, envelope id and every recipient's address, ORCPT and
    /// NOTIFY: the bytes after the fields, read through `EnvelopeText`'s accessors.
    var envelope: QueuedMessage { self }
    public var states: RecipientStates { header.states }
    /// VERP: delivered one recipient per transaction, each with a return
    /// path that encodes it (`VERP.returnPath`). Kept in the spool record.
    public internal(set) var verp: Bool {
        get { header.flags & QueuedMessageFields.verpFlag != 0 }
        set { header.flags = newValue ? header.flags | QueuedMessageFields.verpFlag : header.flags & ~QueuedMessageFields.verpFlag }
    }
    public var ret: DSNReturn { header.ret }
    /// Wall-clock seconds since 1970 (accounting's timeQueued).
    public var receivedAtWall: Int64 { Int64(header.receivedAtWall) }
    /// Monotonic nanoseconds (expiry).
    public var receivedAt: UInt64 { header.receivedAt }
    /// Wall-clock seconds of the first delivery attempt (accounting), 0 = none yet.
    public var firstAttemptWall: Int64 {
        get { Int64(header.firstAttemptWall) }
        set { header.firstAttemptWall = UInt32(clamping: newValue) }
    }

    public var vmta: String { NameTable.shared.name(header.vmtaIndex) }
    /// The `<virtual-mta-pool>` that picked `vmta` at injection (nil: named
    /// directly, or recovered from the spool, which does not keep it). Only
    /// such mail moves to another member when a source IP is disabled.
    public var pool: String? {
        get { header.poolIndex == 0 ? nil : NameTable.shared.name(header.poolIndex) }
        set { header.poolIndex = newValue.map { NameTable.shared.index($0) } ?? 0 }
    }

    public var sender: String { string(EnvelopeText.senderField) }
    public var jobId: String? { optionalString(EnvelopeText.jobField) }
    public var envId: String? { optionalString(EnvelopeText.envIDField) }
    public var recipients: RecipientList { RecipientList(envelope: self) }
    public var pendingCount: Int { Int(header.pending) }
    public var bodySize: Int { Int(header.bodySize) }
    /// Size of the message's whole spool record: the buffer a body read needs.
    public var recordLength: Int { Int(header.recordLength) }
    /// The spool stream (loop) whose segments hold the body.
    public var stream: Int { Int(header.stream) }

    /// A copy for another loop holding only `recipients` as pending (the others
    /// belong to other loops' queues and are marked final in this copy only).
    /// The envelope's bytes are copied (one block per message).
    public func part(keeping recipients: [Int]) -> QueuedMessage {
        let states = header.states
        var s = RecipientStates(count: states.count)
        for i in 0..<states.count { s[i] = .delivered }
        for i in recipients where i >= 0 && i < states.count { s[i] = states[i] }
        var fields = header
        fields.states = s
        fields.pending = UInt32(s.pendingCount)
        let size = envelopeByteCount
        let copy = QueuedMessage.create(minimumCapacity: size) { _ in fields }
        withUnsafeMutablePointerToElements { from in
            copy.withUnsafeMutablePointerToElements { $0.update(from: from, count: size) }
        }
        return unsafeDowncast(copy, to: QueuedMessage.self)
    }

    /// Records a final state; returns false if the recipient was already final
    /// (a duplicate report after a crash-recovery replay, for instance).
    @discardableResult
    public func finish(recipient index: Int, as state: RecipientState) -> Bool {
        guard index >= 0, index < header.states.count, header.states[index] == .pending, state != .pending else { return false }
        header.states[index] = state
        header.pending -= 1
        return true
    }

    public var isComplete: Bool { header.pending == 0 }

    /// The envelope's recipients, decoded one at a time when read.
    public struct RecipientList: RandomAccessCollection {
        let envelope: QueuedMessage
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

/// Everything a queued message keeps besides its envelope's bytes: the
/// header of its one heap block. 72 bytes: the fields are ordered so the
/// small ones fill the states' tail padding.
public struct QueuedMessageFields {
    let id: MessageID
    var states: RecipientStates
    let ret: DSNReturn
    /// `verpFlag`, `wideFlag`.
    var flags: UInt8
    let stream: UInt16
    var pending: UInt32
    let bodySize: UInt32
    let recordLength: UInt32
    let vmtaIndex: UInt32
    var poolIndex: UInt32
    /// Wall-clock seconds (UInt32: good until 2106).
    let receivedAtWall: UInt32
    var firstAttemptWall: UInt32
    let receivedAt: UInt64

    static let verpFlag: UInt8 = 1
    /// The envelope's field ends are 32-bit (its text is 64 KB or more).
    static let wideFlag: UInt8 = 2
}

/// How a `QueuedMessage` is made: its initializers allocate the one block
/// (a ManagedBuffer subclass has no initializer of its own to delegate to;
/// an initializer in a protocol extension may assign `self`).
public protocol QueuedMessageAllocating {}

extension QueuedMessageAllocating where Self == QueuedMessage {
    public init(id: MessageID, sender: String, recipients: [QueuedMessage.Recipient], vmta: String, jobId: String?,
                envId: String?, ret: DSNReturn = .unspecified, receivedAtWall: Int64, receivedAt: UInt64,
                bodySize: Int, recordLength: Int? = nil, stream: Int, states: [RecipientState]? = nil,
                verp: Bool = false) {
        var packed = RecipientStates(count: recipients.count)
        if let states { for (i, s) in states.enumerated() where i < recipients.count { packed[i] = s } }
        self = QueuedMessage.make(id: id, sender: Array(sender.utf8), jobID: Array((jobId ?? "").utf8),
                                  envID: Array((envId ?? "").utf8),
                                  recipients: recipients.map { SpoolRecipient(address: Array($0.address.utf8),
                                                                              orcpt: Array(($0.orcpt ?? "").utf8),
                                                                              notify: $0.notify) },
                                  vmtaIndex: NameTable.shared.index(vmta), ret: ret, verp: verp,
                                  receivedAtWall: receivedAtWall, receivedAt: receivedAt, bodySize: bodySize,
                                  recordLength: recordLength ?? bodySize, stream: stream, states: packed)
    }

    /// From a spooled envelope's bytes, without decoding them.
    public init(id: MessageID, envelope: SpoolEnvelope, vmta: String, receivedAtWall: Int64, receivedAt: UInt64,
                bodySize: Int, recordLength: Int, stream: Int, states: RecipientStates?) {
        self = QueuedMessage.make(id: id, sender: envelope.sender, jobID: envelope.jobID, envID: envelope.envID,
                                  recipients: envelope.recipients, vmtaIndex: NameTable.shared.index(vmta),
                                  ret: envelope.ret, verp: envelope.verp, receivedAtWall: receivedAtWall,
                                  receivedAt: receivedAt, bodySize: bodySize, recordLength: recordLength, stream: stream,
                                  states: states ?? RecipientStates(count: envelope.recipients.count))
    }
}

extension QueuedMessage {
    static func make(id: MessageID, sender: [UInt8], jobID: [UInt8], envID: [UInt8], recipients: [SpoolRecipient],
                     vmtaIndex: UInt32, ret: DSNReturn, verp: Bool, receivedAtWall: Int64, receivedAt: UInt64,
                     bodySize: Int, recordLength: Int, stream: Int, states: RecipientStates) -> QueuedMessage {
        let layout = EnvelopeText.layout(sender: sender, jobID: jobID, envID: envID, recipients: recipients)
        // The states' count is the recipient count the envelope's layout is read with.
        var states = states
        if states.count != recipients.count {
            var fitted = RecipientStates(count: recipients.count)
            for i in 0..<min(states.count, recipients.count) { fitted[i] = states[i] }
            states = fitted
        }
        let fields = QueuedMessageFields(
            id: id, states: states, ret: ret,
            flags: (verp ? QueuedMessageFields.verpFlag : 0) | (layout.wide ? QueuedMessageFields.wideFlag : 0),
            stream: UInt16(clamping: stream), pending: UInt32(states.pendingCount), bodySize: UInt32(clamping: bodySize),
            recordLength: UInt32(clamping: recordLength), vmtaIndex: vmtaIndex, poolIndex: 0,
            receivedAtWall: UInt32(clamping: receivedAtWall), firstAttemptWall: 0, receivedAt: receivedAt)
        let buffer = QueuedMessage.create(minimumCapacity: layout.size) { _ in fields }
        buffer.withUnsafeMutablePointerToElements { p in
            EnvelopeText.write(sender: sender, jobID: jobID, envID: envID, recipients: recipients, layout: layout, to: p)
        }
        return unsafeDowncast(buffer, to: QueuedMessage.self)
    }

    var recipientCount: Int { header.states.count }

    /// Bytes of the envelope after the fields: where its last field ends.
    var envelopeByteCount: Int {
        let n = recipientCount
        let width = header.flags & QueuedMessageFields.wideFlag != 0 ? 4 : 2
        let last = n + width * (2 + 2 * n)
        return withUnsafeMutablePointerToElements { p in
            var v = 0
            for k in 0..<width { v |= Int(p[last + k]) << (8 * k) }
            return v
        }
    }

    func notify(_ r: Int) -> NotifyFlags {
        withUnsafeMutablePointerToElements { NotifyFlags(rawValue: $0[r]) }
    }

    /// Runs `body` over a field's bytes.
    func withField<R>(_ field: Int, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        let n = recipientCount
        let width = header.flags & QueuedMessageFields.wideFlag != 0 ? 4 : 2
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

/// The layout of a message's envelope bytes (after its fields, in the same
/// block): one NOTIFY byte per recipient, then the end offset of each field
/// — sender, job id, envelope id, then address and ORCPT per recipient — as
/// UInt16 (UInt32 when the text is 64 KB or more: `QueuedMessageFields.wideFlag`),
/// then the fields' bytes. An empty job id, envelope id or ORCPT reads as nil
/// (the spool keeps them as empty fields too). The recipient count is the
/// states' count.
enum EnvelopeText {
    static let senderField = 0
    static let jobField = 1
    static let envIDField = 2
    static func addressField(_ r: Int) -> Int { 3 + 2 * r }
    static func orcptField(_ r: Int) -> Int { 4 + 2 * r }

    static func layout(sender: [UInt8], jobID: [UInt8], envID: [UInt8],
                       recipients: [SpoolRecipient]) -> (size: Int, wide: Bool) {
        let n = recipients.count
        let fields = 3 + 2 * n
        var text = sender.count + jobID.count + envID.count
        for r in recipients { text += r.address.count + r.orcpt.count }
        let wide = n + 2 * fields + text > Int(UInt16.max)
        return (n + (wide ? 4 : 2) * fields + text, wide)
    }

    static func write(sender: [UInt8], jobID: [UInt8], envID: [UInt8], recipients: [SpoolRecipient],
                      layout: (size: Int, wide: Bool), to p: UnsafeMutablePointer<UInt8>) {
        let n = recipients.count
        let width = layout.wide ? 4 : 2
        for (i, r) in recipients.enumerated() { p[i] = r.notify.rawValue }
        var end = n + width * (3 + 2 * n)
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
