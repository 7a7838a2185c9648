/// An open-addressing hash set of suppression digests: one `UInt64` per slot,
/// linear probing, at most 3/4 full, deletion by backward shift (no
/// tombstones, so lookups stay short however many removals there were).
///
/// A slot holds the low 61 bits of the entry's digest and, in its top three
/// bits, the `SuppressionReason`; 0 is an empty slot (a digest whose low 61
/// bits are 0 is stored as 1). Ten million entries take a 16 Mi-slot table:
/// 128 MiB, with no object or String per entry. Two texts whose digests share
/// 61 bits would be one entry; at 10^7 entries a lookup of an address not on
/// the list hits one with probability about 10^7 / 2^61 (4e-12).
///
/// Not thread-safe: `SuppressionList` holds it under its lock.
package final class SuppressionTable {
    private var slots: UnsafeMutablePointer<UInt64>
    package private(set) var capacity: Int
    package private(set) var count = 0
    private var mask: Int

    static let keyBits: UInt64 = (1 << 61) - 1

    package init(minimumCapacity: Int = 1024) {
        var c = 16
        while c * 3 / 4 < minimumCapacity { c <<= 1 }
        capacity = c
        mask = c - 1
        slots = .allocate(capacity: c)
        slots.initialize(repeating: 0, count: c)
    }

    deinit { slots.deallocate() }

    /// The slot form of a digest: its low 61 bits, never 0.
    @inline(__always)
    package static func key(_ digest: UInt64) -> UInt64 {
        let k = digest & keyBits
        return k == 0 ? 1 : k
    }

    @inline(__always)
    private func home(_ key: UInt64) -> Int { Int(truncatingIfNeeded: key) & mask }

    /// The slot holding `key`, or nil.
    @inline(__always)
    private func find(_ key: UInt64) -> Int? {
        var i = home(key)
        while true {
            let s = slots[i]
            if s == 0 { return nil }
            if s & Self.keyBits == key { return i }
            i = (i + 1) & mask
        }
    }

    /// The reason `digest` is on the list, or nil when it is not.
    @inline(__always)
    package func reason(_ digest: UInt64) -> SuppressionReason? {
        guard let i = find(Self.key(digest)) else { return nil }
        return SuppressionReason(rawValue: UInt8(truncatingIfNeeded: slots[i] >> 61))
    }

    package func contains(_ digest: UInt64) -> Bool { find(Self.key(digest)) != nil }

    /// Adds `digest` (or sets its reason when present). True when it was new.
    @discardableResult
    package func insert(_ digest: UInt64, reason: SuppressionReason) -> Bool {
        let key = Self.key(digest)
        let value = key | (UInt64(reason.rawValue) << 61)
        if let i = find(key) {
            slots[i] = value
            return false
        }
        if (count + 1) * 4 > capacity * 3 { grow(to: capacity * 2) }
        var i = home(key)
        while slots[i] != 0 { i = (i + 1) & mask }
        slots[i] = value
        count += 1
        return true
    }

    /// Removes `digest`. True when it was present.
    @discardableResult
    package func remove(_ digest: UInt64) -> Bool {
        guard var hole = find(Self.key(digest)) else { return false }
        // Backward shift: move later members of the probe run into the hole
        // unless their home lies cyclically in (hole, j].
        var j = hole
        while true {
            j = (j + 1) & mask
            let s = slots[j]
            if s == 0 { break }
            let h = home(s & Self.keyBits)
            let stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j)
            if stays { continue }
            slots[hole] = s
            hole = j
        }
        slots[hole] = 0
        count -= 1
        return true
    }

    /// Makes room for `n` entries without growing again.
    package func reserve(_ n: Int) {
        var c = capacity
        while c * 3 / 4 < n { c <<= 1 }
        if c > capacity { grow(to: c) }
    }

    /// Every entry's slot form (low 61 bits of the digest) and reason.
    package func forEach(_ body: (UInt64, SuppressionReason) -> Void) {
        for i in 0..<capacity where slots[i] != 0 {
            body(slots[i] & Self.keyBits, SuppressionReason(rawValue: UInt8(truncatingIfNeeded: slots[i] >> 61)) ?? .manual)
        }
    }

    /// Bytes the table holds.
    package var memoryBytes: Int { capacity * MemoryLayout<UInt64>.stride }

    private func grow(to newCapacity: Int) {
        let old = slots, oldCapacity = capacity
        capacity = newCapacity
        mask = newCapacity - 1
        slots = .allocate(capacity: newCapacity)
        slots.initialize(repeating: 0, count: newCapacity)
        for i in 0..<oldCapacity where old[i] != 0 {
            var j = home(old[i] & Self.keyBits)
            while slots[j] != 0 { j = (j + 1) & mask }
            slots[j] = old[i]
        }
        old.deallocate()
    }
}
