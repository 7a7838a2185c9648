import PeregrineIO

/// The suppression list shared across the cluster's nodes (issue #21): every
/// add and remove a node makes (hard bounce, complaint, the API) is appended
/// to one Redis stream, `P:suppression`, and every node reads the stream and
/// applies what it finds, so a recipient suppressed on one node is refused
/// on all. A node starting (or restarting) reads the stream from its start
/// and so catches up with what it missed; while it catches up it applies its
/// own entries too (the stream's order is the truth), afterwards it skips
/// them (its list has them already).
///
/// Entries made while Redis is unreachable wait in an outbox (bounded) and
/// are appended once it answers again. Reads ride on the coordinator's
/// connection, `pollInterval` apart, at most `readBatch` entries each.
/// The stream lives only as long as Redis keeps it: a Redis without
/// persistence that restarts forgets it, and a node that starts later
/// cannot catch up with what it held (each node's own list keeps its own).
/// It is trimmed as it grows (XADD MAXLEN ~ `maxStreamLength`, Redis
/// cutting whole nodes of ~100 entries): a node that falls further behind
/// than that (down while a million changes were made) misses the oldest.
///
/// Loop-confined, like the coordinator.
package final class RedisSuppressionSync<Loop: EventLoop> {
    package enum Op: UInt8, Sendable { case add = 1, remove = 2 }

    /// Called for each entry read that this node should apply.
    package var onEntry: (_ op: Op, _ entry: [UInt8], _ reason: UInt8, _ time: Int64) -> Void = { _, _, _, _ in }

    private let coordinator: RedisClusterCoordinator<Loop>
    private let key: [UInt8]
    private let node: [UInt8]
    private var lastID: [UInt8] = Array("0-0".utf8)
    private var caughtUp = false
    private var outbox: [(op: Op, entry: [UInt8], reason: UInt8, time: Int64)] = []
    private var appending = false
    private var reading = false
    private var timer: TimerHandle?
    private var stopped = false
    private var droppedLogged = false
    static var readBatch: Int { 1000 }
    static var maxOutbox: Int { 1_000_000 }
    /// The stream's length kept (about: Redis trims whole nodes).
    package let maxStreamLength: Int

    /// Entries appended to the stream and applied from it (status, tests).
    package private(set) var published = 0
    package private(set) var applied = 0

    package init(coordinator: RedisClusterCoordinator<Loop>, maxStreamLength: Int = 1_000_000) {
        self.coordinator = coordinator
        self.maxStreamLength = max(1, maxStreamLength)
        key = Array("\(coordinator.options.prefix):suppression".utf8)
        node = Array(coordinator.options.nodeName.utf8)
    }

    package func start() { schedule(after: 0) }

    package func stop() {
        stopped = true
        if let t = timer { coordinator.loop.cancelTimer(t); timer = nil }
    }

    /// A change this node made to its own list, for every other node.
    package func publish(_ op: Op, entry: [UInt8], reason: UInt8, time: Int64) {
        guard outbox.count < Self.maxOutbox else {
            if !droppedLogged {
                droppedLogged = true
                coordinator.log("cluster: suppression outbox full (\(Self.maxOutbox) entries while Redis is unreachable): "
                                + "later changes stay on this node only")
            }
            return
        }
        outbox.append((op, entry, reason, time))
        if coordinator.mode == .shared { append() }
    }

    private func schedule(after ns: UInt64) {
        timer = coordinator.loop.scheduleTimer(after: ns) { [unowned self] in
            self.timer = nil
            guard !self.stopped else { return }
            if self.coordinator.mode == .shared {
                self.append()
                self.read()
            }
            self.schedule(after: self.coordinator.options.pollInterval)
        }
    }

    /// XADD for the outbox's first entries, pipelined; the ones Redis
    /// acknowledged leave the outbox (in order: a failure fails the rest too).
    private func append() {
        guard !appending, !outbox.isEmpty else { return }
        appending = true
        let batch = outbox.prefix(Self.readBatch)
        var answered = 0, acknowledged = 0
        let count = batch.count
        for e in batch {
            coordinator.connection.send(argumentCount: 16, { w in
                w.argument("XADD".utf8); w.argument(self.key)
                w.argument("MAXLEN".utf8); w.argument("~".utf8); w.argument(self.maxStreamLength)
                w.argument("*".utf8)
                w.argument("n".utf8); w.argument(self.node)
                w.argument("o".utf8); w.argument(Int(e.op.rawValue))
                w.argument("e".utf8); w.argument(e.entry)
                w.argument("r".utf8); w.argument(Int(e.reason))
                w.argument("t".utf8); w.argument(Int(e.time))
            }) { [unowned self] r in
                answered += 1
                if case .success(let v) = r, v.errorText == nil, answered == acknowledged + 1 { acknowledged += 1 }
                guard answered == count else { return }
                self.outbox.removeFirst(acknowledged)
                self.published += acknowledged
                self.appending = false
                if acknowledged == count && !self.outbox.isEmpty && self.coordinator.mode == .shared { self.append() }
            }
        }
    }

    /// XRANGE after the last id read; applies each entry in the stream's order.
    private func read() {
        guard !reading else { return }
        reading = true
        var start: [UInt8] = [UInt8(ascii: "(")]
        start += lastID
        coordinator.connection.send(argumentCount: 6, { w in
            w.argument("XRANGE".utf8); w.argument(self.key); w.argument(start); w.argument("+".utf8)
            w.argument("COUNT".utf8); w.argument(Self.readBatch)
        }) { [unowned self] r in
            self.reading = false
            guard case .success(.array(let entries)) = r else { return }
            for entry in entries {
                guard case .array(let pair) = entry, pair.count == 2, let id = pair[0].bytes,
                      case .array(let fields) = pair[1] else { continue }
                self.lastID = id
                var from: [UInt8]?, op: Op?, text: [UInt8]?, reason: UInt8 = 1, time: Int64 = 0
                var i = 0
                while i + 1 < fields.count {
                    let name = fields[i].bytes ?? [], value = fields[i + 1]
                    switch name {
                    case Array("n".utf8): from = value.bytes
                    case Array("o".utf8): op = value.stringValue.flatMap { UInt8($0) }.flatMap(Op.init(rawValue:))
                    case Array("e".utf8): text = value.bytes
                    case Array("r".utf8): reason = value.stringValue.flatMap { UInt8($0) } ?? 1
                    case Array("t".utf8): time = value.stringValue.flatMap { Int64($0) } ?? 0
                    default: break
                    }
                    i += 2
                }
                guard let op, let text, !text.isEmpty else { continue }
                if self.caughtUp && from == self.node { continue }
                self.applied += 1
                self.onEntry(op, text, reason, time)
            }
            if entries.count < Self.readBatch { self.caughtUp = true } else { self.read() }
        }
    }
}
