/// Deterministic message bodies derived from a message id, shared by the
/// crash-test writer (`peregrine spool-crash-writer`), the tests that verify
/// what it left behind, and the spool benchmark.
public enum SpoolTestBody {
    /// Body size for `id` given a nominal size: varies ±50% so records differ in length.
    public static func size(id: MessageID, nominal: Int) -> Int {
        guard nominal > 1 else { return max(nominal, 0) }
        return nominal / 2 + Int(truncatingIfNeeded: (id.lo &* 0x9E37_79B9_7F4A_7C15) >> 33) % nominal
    }

    /// Fills `out` with the pattern for `id`.
    public static func fill(id: MessageID, _ out: UnsafeMutableRawBufferPointer) {
        var x = id.hi ^ (id.lo &* 0x9E37_79B9_7F4A_7C15) | 1
        var i = 0
        let n = out.count
        while i < n {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            var v = x
            var k = 0
            while k < 8 && i < n { out[i] = UInt8(truncatingIfNeeded: v); v >>= 8; i += 1; k += 1 }
        }
    }

    public static func make(id: MessageID, size: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        b.withUnsafeMutableBytes { fill(id: id, $0) }
        return b
    }

    /// The envelope the crash writer uses for `id` (recipient count given).
    public static func envelope(id: MessageID, recipients: Int) -> SpoolEnvelope {
        let tag = String(id.lo, radix: 16)
        return SpoolEnvelope(sender: Array("bounce-\(tag)@sender.example".utf8),
                             recipients: (0..<recipients).map {
                                 SpoolRecipient("user\($0)-\(tag)@d\($0 % 5).example", orcpt: "rfc822;user\($0)@orig",
                                                notify: [.failure]) },
                             vmta: Array("vmta1".utf8), jobID: Array("job-\(tag)".utf8), envID: Array("E\(tag)".utf8),
                             receivedAt: Int64(truncatingIfNeeded: id.hi / 1_000_000))
    }
}
