/// A byte buffer whose memory the owner controls: its address is stable until
/// it grows, so it can be handed to a loop for a send or a read that completes
/// later (an Array's storage could move under a pending operation).
public final class OwnedBuffer {
    public private(set) var memory: UnsafeMutableRawBufferPointer
    public private(set) var count = 0

    public init(capacity: Int) {
        memory = .allocate(byteCount: max(capacity, 64), alignment: 16)
    }

    deinit { memory.deallocate() }

    public var capacity: Int { memory.count }
    public var isEmpty: Bool { count == 0 }
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: memory[0..<count]) }

    /// Makes room for `size` bytes (contents are kept). Never call while an
    /// operation on `memory` is in flight.
    public func reserve(_ size: Int) {
        guard size > memory.count else { return }
        var newCapacity = memory.count
        while newCapacity < size { newCapacity *= 2 }
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: newCapacity, alignment: 16)
        if count > 0, let src = memory.baseAddress, let dst = bigger.baseAddress { dst.copyMemory(from: src, byteCount: count) }
        memory.deallocate()
        memory = bigger
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let src = bytes.baseAddress else { return }
        reserve(count + bytes.count)
        guard let base = memory.baseAddress else { return }
        (base + count).copyMemory(from: src, byteCount: bytes.count)
        count += bytes.count
    }

    /// Sets the valid length after the buffer was filled directly (a read).
    public func setCount(_ n: Int) { count = min(max(0, n), memory.count) }

    public func clear() { count = 0 }
}
