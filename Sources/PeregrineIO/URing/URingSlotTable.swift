#if canImport(Glibc)
import Glibc
#endif
import CURing

/// What an in-flight io_uring operation is (decides how its CQE is handled).
enum URingOp: UInt8 {
    case free
    case wake          // eventfd read kept armed for cross-thread wake-ups
    case accept        // multishot (or re-armed single-shot) accept of a listener
    case receive
    case send
    case sendv
    case connect
    case cancel        // IORING_OP_ASYNC_CANCEL for every op of a closing fd
    case receiveDatagram
    case sendDatagram
    case fileWrite
    case fileRead
    case fsync
    case sendFile      // file → pipe → socket, two IORING_OP_SPLICEs per round (URingLoop+SendFile.swift)
}

/// The caller's completion, stored in the slot until the operation's final CQE.
enum URingCompletion {
    case none
    case void((Result<Void, IOError>) -> Void)
    case count((Result<Int, IOError>) -> Void)
    case socket((Result<Socket, IOError>) -> Void)
    case datagram((Result<(Int, SocketAddress), IOError>) -> Void)
    case accept((Result<AcceptedConnection, IOError>) -> Void)
}

/// Kernel-visible memory an operation needs until its completion: msghdr,
/// socket address, iovecs, link-timeout timespec. Allocated once per slot on
/// first use and kept with the slot, so steady-state operations allocate nothing.
final class URingSlotAux {
    let msg: UnsafeMutablePointer<msghdr>
    let address: UnsafeMutablePointer<sockaddr_storage>
    let iov: UnsafeMutablePointer<iovec>
    let timeout: UnsafeMutablePointer<__kernel_timespec>
    /// Gather-write iovecs (sendv); grown on demand, never shrunk.
    private(set) var iovs: UnsafeMutablePointer<iovec>
    private(set) var iovCapacity: Int
    /// sendv progress: iovecs [iovStart, iovCount) are still (partly) unsent.
    var iovCount = 0
    var iovStart = 0

    init() {
        msg = .allocate(capacity: 1); msg.initialize(to: msghdr())
        address = .allocate(capacity: 1); address.initialize(to: sockaddr_storage())
        iov = .allocate(capacity: 1); iov.initialize(to: iovec())
        timeout = .allocate(capacity: 1); timeout.initialize(to: __kernel_timespec())
        iovCapacity = 8
        iovs = .allocate(capacity: iovCapacity); iovs.initialize(repeating: iovec(), count: iovCapacity)
    }

    func reserveIOVs(_ count: Int) {
        guard count > iovCapacity else { return }
        var capacity = iovCapacity
        while capacity < count { capacity *= 2 }
        iovs.deinitialize(count: iovCapacity); iovs.deallocate()
        iovs = .allocate(capacity: capacity); iovs.initialize(repeating: iovec(), count: capacity)
        iovCapacity = capacity
    }

    deinit {
        msg.deallocate(); address.deallocate(); iov.deallocate(); timeout.deallocate()
        iovs.deallocate()
    }
}

/// One in-flight operation. `user_data` of its SQE is (generation << 32 | index).
struct URingSlot {
    var op: URingOp = .free
    var generation: UInt32 = 0
    var fd: Int32 = -1
    /// Multishot accept: an SQE is outstanding (false while waiting to re-arm).
    var armed = false
    var completion: URingCompletion = .none
    var buffer: UnsafeMutableRawPointer? = nil
    var length = 0
    /// Bytes done so far (partial sends / writes / reads).
    var progress = 0
    var offset: Int64 = 0
    /// File writes: the fdatasync epoch the write belongs to; fsync: the epoch it covers.
    var epoch: UInt64 = 0
    /// fsync: submitted linked (IOSQE_IO_LINK) behind its epoch's last write.
    var linked = false
    var aux: URingSlotAux? = nil
    /// sendFile: the file, the pipe its bytes go through, and how many are in that pipe now.
    var spliceFile: Int32 = -1
    var splicePipe = URingSplicePipe()
    var inPipe = 0
}

/// Preallocated table of completion slots indexed by `user_data`. Freed
/// slots are reused LIFO (warm cache); the table only grows when more
/// operations are in flight than ever before.
struct URingSlotTable {
    /// user_data of SQEs whose CQE is ignored (link timeouts).
    static let ignoredUserData: UInt64 = .max

    var slots: [URingSlot]
    private var freeList: [Int32]

    init(capacity: Int) {
        slots = Array(repeating: URingSlot(), count: capacity)
        freeList = (0..<Int32(capacity)).reversed().map { $0 }
    }

    var inUse: Int { slots.count - freeList.count }

    mutating func allocate(_ op: URingOp, fd: Int32, completion: URingCompletion) -> Int32 {
        let index: Int32
        if let reused = freeList.popLast() {
            index = reused
        } else {
            index = Int32(slots.count)
            let grow = max(slots.count, 64)
            slots.reserveCapacity(slots.count + grow)
            for i in stride(from: Int32(slots.count + grow - 1), to: index, by: -1) { freeList.append(i) }
            slots.append(contentsOf: repeatElement(URingSlot(), count: grow))
        }
        let i = Int(index)
        slots[i].op = op
        slots[i].generation &+= 1
        slots[i].fd = fd
        slots[i].armed = false
        slots[i].completion = completion
        slots[i].buffer = nil
        slots[i].length = 0
        slots[i].progress = 0
        slots[i].offset = 0
        slots[i].epoch = 0
        slots[i].linked = false
        slots[i].inPipe = 0
        return index
    }

    @inline(__always)
    func userData(_ index: Int32) -> UInt64 {
        UInt64(slots[Int(index)].generation) << 32 | UInt64(UInt32(bitPattern: index))
    }

    /// The slot a CQE belongs to, or nil for a stale or foreign user_data.
    @inline(__always)
    func resolve(_ userData: UInt64) -> Int32? {
        let index = Int(UInt32(truncatingIfNeeded: userData))
        guard index < slots.count, slots[index].op != .free,
              slots[index].generation == UInt32(truncatingIfNeeded: userData >> 32) else { return nil }
        return Int32(index)
    }

    /// Frees the slot and hands back its completion (to be invoked by the caller).
    mutating func release(_ index: Int32) -> URingCompletion {
        let i = Int(index)
        let completion = slots[i].completion
        slots[i].completion = .none
        slots[i].op = .free
        slots[i].buffer = nil
        freeList.append(index)
        return completion
    }

    /// The slot's kernel-visible scratch memory (allocated on first use).
    mutating func aux(_ index: Int32) -> URingSlotAux {
        if let aux = slots[Int(index)].aux { return aux }
        let aux = URingSlotAux()
        slots[Int(index)].aux = aux
        return aux
    }
}

/// Per-descriptor bookkeeping, indexed by fd number. The fd is closed only
/// when `pending` drops to zero after close was asked, so the kernel cannot
/// hand the same number out while operations still refer to it.
struct URingFDState {
    /// Operations in flight on this fd (including a queued fsync and the cancel op).
    var pending: Int32 = 0
    var pendingSends: Int32 = 0
    var closing = false
    var shutdownAfterSends = false
    /// Listener: the accept slot (-1 when none).
    var acceptSlot: Int32 = -1
    // Files: fdatasync ordering.
    /// The epoch new writes join; `fdatasync` closes the current epoch.
    var epoch: UInt64 = 0
    /// In-flight write counts per epoch, oldest first.
    var writeEpochs: [(epoch: UInt64, count: Int)] = []
    /// fsync slots waiting for earlier writes, in call order.
    var waitingFsyncs: [Int32] = []

    /// The oldest epoch that still has a write in flight.
    var oldestWriteEpoch: UInt64? { writeEpochs.first?.epoch }

    mutating func addWrite(epoch e: UInt64) {
        if let last = writeEpochs.indices.last, writeEpochs[last].epoch == e {
            writeEpochs[last].count += 1
        } else {
            writeEpochs.append((e, 1))
        }
    }

    mutating func removeWrite(epoch e: UInt64) {
        guard let i = writeEpochs.firstIndex(where: { $0.epoch == e }) else { return }
        writeEpochs[i].count -= 1
        while let first = writeEpochs.first, first.count <= 0 { writeEpochs.removeFirst() }
    }
}
