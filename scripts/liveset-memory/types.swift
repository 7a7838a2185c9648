public struct MessageID: Hashable, Sendable {
    public var hi: UInt64
    public var lo: UInt64
    public init(hi: UInt64, lo: UInt64) { self.hi = hi; self.lo = lo }
}
public struct MessageLocation: Hashable, Sendable {
    public var segment: UInt32; public var offset: Int64; public var recordLength: UInt32; public var bodyOffset: UInt32
    public init(segment: UInt32, offset: Int64, recordLength: UInt32, bodyOffset: UInt32) {
        self.segment = segment; self.offset = offset; self.recordLength = recordLength; self.bodyOffset = bodyOffset
    }
}
