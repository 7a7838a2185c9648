import Testing
import PeregrineSMTP
import PeregrineIO

@Suite struct DotStuffingTests {
    func unstuff(_ input: [UInt8], splitAt: [Int] = [], maxLine: Int = 1000)
        -> (body: [UInt8], consumed: Int?, u: DotUnstuffer) {
        var u = DotUnstuffer(maxLineLength: maxLine)
        var body: [UInt8] = []
        var offset = 0
        var cuts = splitAt.filter { $0 > 0 && $0 < input.count } + [input.count]
        cuts.sort()
        for cut in cuts where cut >= offset {
            let piece = Array(input[offset..<cut])
            let p = piece.withUnsafeBytes { u.consume($0) { body.append(contentsOf: $0) } }
            if case .complete(let c) = p { return (body, offset + c, u) }
            offset = cut
        }
        return (body, nil, u)
    }

    @Test func removesStuffingAndFindsTerminator() {
        let r = unstuff(bytes("Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"))
        #expect(text(r.body) == "Subject: x\r\n\r\n.leading dot\r\n")
        #expect(r.consumed == bytes("Subject: x\r\n\r\n..leading dot\r\n.\r\n").count)
    }

    @Test func emptyMessage() {
        let r = unstuff(bytes(".\r\n"))
        #expect(r.body.isEmpty)
        #expect(r.consumed == 3)
    }

    @Test func everySplitGivesSameResult() {
        let input = bytes("a\r\n.b\r\n..\r\n.\rx\r\nline\n.\nstill\r\n.\r\nNEXT")
        let whole = unstuff(input)
        #expect(text(whole.body) == "a\r\nb\r\n.\r\n\rx\r\nline\n.\nstill\r\n")
        for i in 0...input.count {
            for j in i...input.count where j - i < 4 {
                let r = unstuff(input, splitAt: [i, j])
                #expect(r.body == whole.body, "split \(i),\(j)")
                #expect(r.consumed == whole.consumed)
            }
        }
    }

    @Test func smugglingSequencesDoNotEndData() {
        for seq in ["x\n.\ny", "x\r\n.\ny", "x\n.\r\ny", "x\r.\r\ny", "x\r\n.\r\r\ny"] {
            let r = unstuff(bytes(seq))
            #expect(r.consumed == nil, "\(seq.debugDescription) must not end DATA")
        }
        #expect(unstuff(bytes("x\n.\n")).u.sawBareLineFeed)
    }

    @Test func flagsOverlongLines() {
        let ok = unstuff(bytes(String(repeating: "a", count: 998) + "\r\n.\r\n"))
        #expect(!ok.u.sawOverlongLine)
        let long = unstuff(bytes(String(repeating: "a", count: 999) + "\r\n.\r\n"), splitAt: [500])
        #expect(long.u.sawOverlongLine)
        #expect(long.consumed != nil)
    }

    @Test func stufferNormalisesAndStuffs() {
        var s = DotStuffer()
        var out = ByteBuffer()
        s.stuff(bytes(".start\nmid\r\n.\rbare cr\r\nend"), into: &out)
        s.finish(into: &out)
        #expect(text(out.readableBytesArray) == "..start\r\nmid\r\n..\r\nbare cr\r\nend\r\n.\r\n")
    }

    @Test func stufferEmptyAndCRLFTerminatedBodies() {
        var s = DotStuffer()
        var out = ByteBuffer()
        s.finish(into: &out)
        #expect(text(out.readableBytesArray) == ".\r\n")
        out.clear()
        s.stuff(bytes("a\r\n"), into: &out)
        s.finish(into: &out)
        #expect(text(out.readableBytesArray) == "a\r\n.\r\n")
    }

    @Test func stuffThenUnstuffRoundTripsRandomBodies() {
        var rng = SplitMix64(seed: 42)
        let tokens: [[UInt8]] = [bytes("a"), bytes("."), bytes(" "), bytes("\r\n"), bytes("..")]
        for _ in 0..<1000 {
            let count = Int(rng.next() % 60)
            var body: [UInt8] = []
            for _ in 0..<count { body += tokens[Int(rng.next() % UInt64(tokens.count))] }
            var s = DotStuffer()
            var wire = ByteBuffer()
            let cut = Int(rng.next() % UInt64(body.count + 1))
            s.stuff(Array(body[..<cut]), into: &wire)
            s.stuff(Array(body[cut...]), into: &wire)
            s.finish(into: &wire)
            let w = wire.readableBytesArray
            let r = unstuff(w, splitAt: [Int(rng.next() % UInt64(w.count + 1))])
            #expect(r.consumed == w.count)
            var expected = body
            if !expected.isEmpty && expected.suffix(2) != [13, 10] { expected += [13, 10] }
            #expect(r.body == expected)
        }
    }
}

/// The raw-memory stuffer (what a connection writes into its send buffer).
@Suite struct DotStufferRawMemoryTests {
    func raw(_ pieces: [[UInt8]]) -> [UInt8] {
        var s = DotStuffer()
        var out: [UInt8] = []
        for p in pieces {
            let room = UnsafeMutableRawBufferPointer.allocate(byteCount: DotStuffer.maxStuffedCount(p.count), alignment: 1)
            defer { room.deallocate() }
            let n = p.withUnsafeBytes { s.stuff($0, into: room) }
            #expect(n <= DotStuffer.maxStuffedCount(p.count))
            out += Array(UnsafeRawBufferPointer(rebasing: room[0..<n]))
        }
        let end = UnsafeMutableRawBufferPointer.allocate(byteCount: DotStuffer.maxFinishCount, alignment: 1)
        defer { end.deallocate() }
        let n = s.finish(into: end)
        return out + Array(UnsafeRawBufferPointer(rebasing: end[0..<n]))
    }

    @Test func worstCaseInputsStayWithinTheBound() {
        // Every byte doubles: bare LFs, bare CRs, dots at line starts; a CR held across chunks.
        #expect(text(raw([bytes("\n\n\n")])) == "\r\n\r\n\r\n.\r\n")
        #expect(text(raw([bytes("\r\r"), bytes(".")])) == "\r\n\r\n..\r\n.\r\n")
        #expect(text(raw([bytes(".\n.\n.")])) == "..\r\n..\r\n..\r\n.\r\n")
        #expect(text(raw([bytes("x\r"), bytes("\n")])) == "x\r\n.\r\n")
        #expect(text(raw([])) == ".\r\n")
    }

    @Test func anySplitGivesTheByteBufferFormsBytes() {
        var rng = SplitMix64(seed: 7)
        let tokens: [[UInt8]] = [bytes("a"), bytes("."), bytes(" "), bytes("\r\n"), bytes("\n"), bytes("\r"), bytes("..")]
        for _ in 0..<1000 {
            var body: [UInt8] = []
            for _ in 0..<Int(rng.next() % 40) { body += tokens[Int(rng.next() % UInt64(tokens.count))] }
            let cut = Int(rng.next() % UInt64(body.count + 1))
            var s = DotStuffer()
            var expected = ByteBuffer()
            s.stuff(body, into: &expected)
            s.finish(into: &expected)
            #expect(raw([Array(body[..<cut]), Array(body[cut...])]) == expected.readableBytesArray)
        }
    }

    /// A chunk over four of the 64 KiB zero blocks ByteBuffer.appendDirectly
    /// grows its room with, after bytes already pending (the loadgen's 8 MB
    /// body): every line, dotted or not, comes back in order.
    @Test func aChunkOfManyZeroBlocksIsStuffedWhole() {
        var body: [UInt8] = []
        var expected: [UInt8] = Array("pending\r\n".utf8)
        var n = 0
        while body.count < 256 * 1024 + 17 {
            let line = Array((n % 7 == 0 ? ".line \(n)\r\n" : "line \(n) of filler text\r\n").utf8)
            body += line
            expected += n % 7 == 0 ? [UInt8(ascii: ".")] + line : line
            n += 1
        }
        expected += Array(".\r\n".utf8)
        var s = DotStuffer()
        var out = ByteBuffer()
        out.append(string: "pending\r\n")
        s.stuff(body, into: &out)
        s.finish(into: &out)
        #expect(out.readableBytes == expected.count)
        #expect(out.readableBytesArray == expected)
    }
}
