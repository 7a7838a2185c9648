import Testing
import PeregrineSMTP
import PeregrineIO

/// Whether received DATA content is its own wire form (it dot-stuffs to
/// itself), decided by the unstuffer as it reads: the spool's wire-form flag,
/// and with it delivery straight from the spool file, depends on it.
@Suite struct WireFormTests {
    /// The content of `wire` (up to the terminator) and the unstuffer's verdict, over any split.
    private func verdict(_ wire: String, splitAt cuts: [Int] = []) -> (content: [UInt8], wireForm: Bool) {
        let input = bytes(wire)
        var u = DotUnstuffer()
        var content: [UInt8] = []
        var offset = 0
        for cut in (cuts.filter { $0 > 0 && $0 < input.count } + [input.count]).sorted() where cut >= offset {
            let piece = Array(input[offset..<cut])
            let p = piece.withUnsafeBytes { u.consume($0) { content.append(contentsOf: $0) } }
            if case .complete = p { break }
            offset = cut
        }
        return (content, u.contentIsWireForm)
    }

    /// What the client-side stuffer makes of `content` (without the end marker).
    private func stuffed(_ content: [UInt8]) -> [UInt8] {
        var s = DotStuffer()
        var out = [UInt8](repeating: 0, count: DotStuffer.maxStuffedCount(content.count) + DotStuffer.maxFinishCount)
        let n = out.withUnsafeMutableBytes { o in content.withUnsafeBytes { s.stuff($0, into: o) } }
        let m = out.withUnsafeMutableBytes { o in s.finish(into: UnsafeMutableRawBufferPointer(rebasing: o[n...])) }
        return Array(out[0 ..< n + m - 3])
    }

    static let cases: [(String, Bool)] = [
        ("Subject: a\r\n\r\nplain body\r\n.\r\n", true),
        (".\r\n", true),                                       // empty message
        ("Subject: a\r\n\r\n..leading dot\r\n.\r\n", false),   // a stuffing dot removed
        ("Subject: a\r\n\r\nbare\nline feed\r\n.\r\n", false),
        ("Subject: a\r\n\r\nbare\rcarriage return\r\n.\r\n", false),
        ("Subject: a\r\n\r\nends in CR\r\r\n.\r\n", false),
        ("Subject: a\r\n\r\n.\rx\r\n.\r\n", false),            // "." CR then not LF
        ("Subject: a\r\n\r\n8bit \u{e9}\u{fc} and a dot.\r\nin the . middle\r\n.\r\n", true),
    ]

    /// The verdict is right exactly when stuffing the content gives it back,
    /// and no split of the input changes it.
    @Test(arguments: cases)
    func verdictMatchesWhatStuffingDoes(_ wire: String, _ expected: Bool) {
        let whole = verdict(wire)
        #expect(whole.wireForm == expected, "\(wire.debugDescription)")
        #expect((stuffed(whole.content) == whole.content) == expected, "stuffing \(wire.debugDescription)")
        let n = bytes(wire).count
        for i in 0...n {
            for j in i...min(n, i + 3) {
                #expect(verdict(wire, splitAt: [i, j]).wireForm == expected, "split at \(i), \(j): \(wire.debugDescription)")
            }
        }
    }

    @Test func resetForgetsTheVerdict() {
        var u = DotUnstuffer()
        _ = bytes("..x\r\n.\r\n").withUnsafeBytes { u.consume($0) { _ in } }
        #expect(!u.contentIsWireForm)
        u.reset()
        _ = bytes("x\r\n.\r\n").withUnsafeBytes { u.consume($0) { _ in } }
        #expect(u.contentIsWireForm)
    }

    @Test func addedHeaderLinesAreChecked() {
        func check(_ s: String) -> Bool { bytes(s).withUnsafeBytes { DotStuffer.isOwnWireForm($0) } }
        #expect(check(""))
        #expect(check("Received: from a\r\n\tby b; Sun, 6 Dec 2026 00:00:00 +0000\r\n"))
        #expect(!check("Received: from a"), "no final CRLF")
        #expect(!check("X: a\r\n.dot\r\n"))
        #expect(!check("X: a\nY: b\r\n"))
        #expect(!check("X: a\rY: b\r\n"))
    }
}
