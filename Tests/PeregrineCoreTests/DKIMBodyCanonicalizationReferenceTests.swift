import Testing
@testable import PeregrineDKIM

/// The run-at-a-time body hasher (issue 18) against a line-by-line reference
/// written from RFC 6376 §3.4.3/§3.4.4 itself: split the body into lines at
/// CRLF, canonicalise each line, drop trailing empty lines. Random bodies over
/// an alphabet dense in the bytes that matter (CR, LF, SP, HT), with a fixed
/// seed, fed whole and in random chunks, with and without an `l=` limit.
@Suite struct DKIMBodyCanonicalizationReferenceTests {
    /// RFC 6376's canonical body, built the slow and obvious way.
    static func reference(_ body: [UInt8], _ c: DKIMCanonicalization) -> [UInt8] {
        var lines: [[UInt8]] = []
        var line: [UInt8] = []
        var i = 0
        while i < body.count {
            if body[i] == 13, i + 1 < body.count, body[i + 1] == 10 {
                lines.append(line); line = []; i += 2; continue
            }
            line.append(body[i]); i += 1
        }
        // A last line without CRLF is still a line (it gets a CRLF).
        if !line.isEmpty { lines.append(line) }
        if c == .relaxed {
            lines = lines.map { l in
                var out: [UInt8] = []
                var space = false
                for b in l {
                    if b == 32 || b == 9 { space = true; continue }
                    if space { out.append(32); space = false }
                    out.append(b)
                }
                return out // whitespace at the end of a line is dropped
            }
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        if lines.isEmpty { return c == .simple ? [13, 10] : [] }
        return lines.flatMap { $0 + [13, 10] }
    }

    /// A small deterministic generator (xorshift64*), so a failure can be replayed.
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12; state ^= state << 25; state ^= state >> 27
            return state &* 2685821657736338717
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let alphabet: [UInt8] = [13, 10, 32, 9, 13, 10, 32, 32, 9, UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "."), 0xC3, 0]

    @Test func runHasherMatchesTheReferenceOnRandomBodies() {
        var g = Generator(state: 0x9E37_79B9_7F4A_7C15)
        for round in 0..<3000 {
            let length = g.below(round < 2500 ? 40 : 9000)
            var body: [UInt8] = []
            for _ in 0..<length {
                // Mostly text with whitespace, sometimes long content runs (the fast path).
                body.append(g.below(4) == 0 ? Self.alphabet[g.below(Self.alphabet.count)] : UInt8(ascii: "a") + UInt8(g.below(26)))
            }
            for c in [DKIMCanonicalization.simple, .relaxed] {
                let canonical = Self.reference(body, c)
                let limit: Int? = g.below(3) == 0 ? g.below(canonical.count + 2) : nil
                let h = DKIMBodyHasher()
                h.reset(c, limit: limit)
                body.withUnsafeBytes { raw in
                    var start = 0
                    while start < raw.count {
                        let end = g.below(2) == 0 ? raw.count : min(raw.count, start + 1 + g.below(64))
                        h.update(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                        start = end
                    }
                }
                let digest = h.finish()
                let hashed = limit.map { Array(canonical.prefix($0)) } ?? canonical
                #expect(digest == sha256(hashed), "round \(round) \(c) limit \(String(describing: limit)): \(body)")
                #expect(h.canonicalLength == canonical.count, "round \(round) \(c): canonical length")
            }
        }
    }
}
