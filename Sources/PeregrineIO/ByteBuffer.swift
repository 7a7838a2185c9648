/// An owned, growable byte buffer with a reader index: the session's input
/// remainder and output accumulator. It keeps its capacity across `clear()`
/// so a connection reuses one allocation for its whole life.
public struct ByteBuffer: Sendable {
    @usableFromInline var storage: [UInt8]
    @usableFromInline var readerIndex: Int = 0

    public init(capacity: Int = 1024) {
        storage = []
        storage.reserveCapacity(capacity)
    }

    public init(_ bytes: some Sequence<UInt8>) {
        storage = Array(bytes)
    }

    /// Number of unread bytes.
    @inlinable public var readableBytes: Int { storage.count - readerIndex }
    @inlinable public var isEmpty: Bool { readerIndex == storage.count }
    public var capacity: Int { storage.capacity }

    /// The unread bytes as an array (allocates; for tests and edges).
    public var readableBytesArray: [UInt8] { Array(storage[readerIndex...]) }

    @inlinable public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        storage.append(contentsOf: bytes)
    }

    @inlinable public mutating func append(_ byte: UInt8) {
        storage.append(byte)
    }

    @inlinable public mutating func append(contentsOf bytes: some Sequence<UInt8>) {
        storage.append(contentsOf: bytes)
    }

    @inlinable public mutating func append(string: String) {
        var s = string
        s.withUTF8 { storage.append(contentsOf: $0) }
    }

    /// Appends a non-negative decimal integer without going through String.
    @inlinable public mutating func appendDecimal(_ value: Int) {
        if value <= 0 { storage.append(UInt8(ascii: "0")); return }
        var v = value
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while v > 0 { d[n] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; n += 1 }
            while n > 0 { n -= 1; storage.append(d[n]) }
        }
    }

    /// Marks `count` bytes as read.
    @inlinable public mutating func moveReaderIndex(forwardBy count: Int) {
        readerIndex = min(readerIndex + count, storage.count)
        if readerIndex == storage.count { clear() }
    }

    /// Drops all bytes, keeping the capacity.
    @inlinable public mutating func clear() {
        storage.removeAll(keepingCapacity: true)
        readerIndex = 0
    }

    /// Moves unread bytes to the front when the read part dominates.
    public mutating func compactIfNeeded() {
        if readerIndex > 0 && readerIndex >= storage.count / 2 {
            storage.removeSubrange(0..<readerIndex)
            readerIndex = 0
        }
    }

    /// Calls `body` with the unread bytes. The pointer is valid only inside `body`.
    @inlinable public func withUnsafeReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[readerIndex...])) }
    }

    /// Exchanges the contents with `other` (O(1)); the owner's ping-pong for output.
    public mutating func swapContents(with other: inout ByteBuffer) {
        swap(&self, &other)
    }
}

extension ByteBuffer: Equatable {
    public static func == (lhs: ByteBuffer, rhs: ByteBuffer) -> Bool {
        lhs.storage[lhs.readerIndex...] == rhs.storage[rhs.readerIndex...]
    }
}
