extension ByteBuffer {
    /// Lets `write` fill up to `maxCount` bytes at the end of the buffer in
    /// place (no intermediate copy); `write` returns how many it wrote.
    package mutating func appendDirectly(maxCount: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) {
        guard maxCount > 0 else { return }
        let start = storage.count
        storage.append(contentsOf: repeatElement(0, count: maxCount))
        let written = storage.withUnsafeMutableBytes { all in
            write(UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + maxCount)]))
        }
        storage.removeLast(maxCount - min(max(written, 0), maxCount))
    }
}
