extension ByteBuffer {
    /// Lets `write` fill up to `maxCount` bytes at the end of the buffer in
    /// place (no intermediate copy); `write` returns how many it wrote.
    package mutating func appendDirectly(maxCount: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) {
        guard maxCount > 0 else { return }
        let start = storage.count
        // The room is grown by copying contiguous zeroes (one memcpy per 64 KiB),
        // not by appending `repeatElement(0, count:)`: unspecialised in a debug
        // build, that walked an iterator per byte (0.4 s of CPU per MB dot-stuffed,
        // 92 % of a debug loadgen sending 8 MB; the same path carries the daemon's
        // large bodies). No exact reserveCapacity: append keeps the growth geometric.
        var remaining = maxCount
        ByteBuffer.zeroes.withUnsafeBufferPointer { zeroes in
            while remaining > 0 {
                let n = min(remaining, zeroes.count)
                storage.append(contentsOf: UnsafeBufferPointer(rebasing: zeroes[0..<n]))
                remaining -= n
            }
        }
        let written = storage.withUnsafeMutableBytes { all in
            write(UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + maxCount)]))
        }
        storage.removeLast(maxCount - min(max(written, 0), maxCount))
    }

    private static let zeroes = [UInt8](repeating: 0, count: 64 * 1024)
}
