import CCRC32C

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): SSE4.2's crc32
/// instruction where the CPU has it (every x86-64 server since 2008), else
/// table-driven with slicing-by-8. Used for the spool's record framing.
public enum CRC32C {
    /// Whether `checksum` uses the crc32 instruction on this CPU.
    public static let usesHardware = peregrine_crc32c_hardware_available() != 0

    /// 8 tables of 256 entries, flattened: table k at [k*256 ..< (k+1)*256].
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 256 * 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (prev >> 8) ^ t[Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// Checksum of `bytes`, continuing from `crc` (pass the previous result to chain).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        if usesHardware {
            return ~peregrine_crc32c_update(~crc, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        return softwareChecksum(bytes, continuing: crc)
    }

    /// The table version: the fallback, and the reference the hardware path is tested against.
    public static func softwareChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        guard let base = bytes.baseAddress else { return crc }
        var p = base
        var n = bytes.count
        tables.withUnsafeBufferPointer { t in
            while n >= 8 {
                let lo = p.loadUnaligned(as: UInt32.self).littleEndian ^ c
                let hi = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                  ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                  ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                  ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                p += 8
                n -= 8
            }
            while n > 0 {
                c = (c >> 8) ^ t[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)]
                p += 1
                n -= 1
            }
        }
        return ~c
    }

    @inlinable
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        if let r = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0)) }) { return r }
        return Array(bytes).withUnsafeBytes { checksum($0) }
    }
}
