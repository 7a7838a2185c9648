import Testing
@testable import PeregrineSpool

@Suite struct SpoolFormatTests {
    @Test func crc32cKnownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        // Chaining equals one pass, whatever the split.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = CRC32C.checksum(data)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let a = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<split])) }
            let b = data.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[split...]), continuing: a) }
            #expect(b == whole)
        }
    }

    @Test func messageRecordRoundTrip() {
        let env = SpoolFixtures.envelope(42, recipients: 40)
        let id = MessageID(hi: 1, lo: 2)
        let body = SpoolFixtures.body(for: id, size: 777)
        var states = RecipientStates(count: 40)
        states[3] = .delivered; states[39] = .expired
        let len = SpoolRecordFormat.headerSize + SpoolRecordFormat.envelopeSize(env) + body.count
        var buf = [UInt8](repeating: 0, count: len)
        let written = buf.withUnsafeMutableBytes { out in
            body.withUnsafeBytes { SpoolRecordFormat.encodeMessage(id: id, envelope: env, states: states, body: $0, into: out.baseAddress!) }
        }
        #expect(written == len)
        buf.withUnsafeBytes { raw in
            guard case .record(.message, let plen) = SpoolRecordFormat.frame(raw) else { Issue.record("no frame"); return }
            #expect(plen + SpoolRecordFormat.headerSize == len)
            let m = SpoolRecordFormat.decodeMessage(payload: UnsafeRawBufferPointer(rebasing: raw[16...]))
            #expect(m?.id == id)
            #expect(m?.envelope == env)
            #expect(m?.states == states)
            if let m { #expect(Array(raw[m.bodyOffset...]) == body) }
        }
    }

    @Test func outcomeRecordRoundTrip() {
        var buf = [UInt8](repeating: 0, count: SpoolRecordFormat.outcomeRecordSize)
        buf.withUnsafeMutableBytes { SpoolRecordFormat.encodeOutcome(id: MessageID(hi: 9, lo: 8), recipient: 70000, state: .bounced, into: $0.baseAddress!) }
        buf.withUnsafeBytes { raw in
            guard case .record(.outcome, _) = SpoolRecordFormat.frame(raw) else { Issue.record("no frame"); return }
            let o = SpoolRecordFormat.decodeOutcome(payload: UnsafeRawBufferPointer(rebasing: raw[16...]))
            #expect(o?.0 == MessageID(hi: 9, lo: 8)); #expect(o?.1 == 70000); #expect(o?.2 == .bounced)
        }
    }

    @Test func everySingleBitFlipIsDetected() {
        var buf = [UInt8](repeating: 0, count: SpoolRecordFormat.outcomeRecordSize)
        buf.withUnsafeMutableBytes { SpoolRecordFormat.encodeOutcome(id: MessageID(hi: 1, lo: 1), recipient: 0, state: .delivered, into: $0.baseAddress!) }
        for bit in 0..<(buf.count * 8) {
            var b = buf
            b[bit / 8] ^= UInt8(1 << (bit % 8))
            let ok: Bool = b.withUnsafeBytes { if case .record = SpoolRecordFormat.frame($0) { return true } else { return false } }
            #expect(!ok, "bit \(bit)")
        }
    }

    @Test func recipientStatesPackedAndSpilled() {
        for n in [1, 32, 33, 100] {
            var s = RecipientStates(count: n)
            #expect(s.pendingCount == n)
            for i in stride(from: 0, to: n, by: 3) { s[i] = .delivered }
            #expect(s.pendingCount == n - (n + 2) / 3)
            #expect(s[0] == .delivered)
            if n > 1 { #expect(s[1] == .pending) }
        }
    }

    @Test func messageIDHexRoundTrip() {
        let id = MessageID(hi: 0x0123_4567_89AB_CDEF, lo: 42)
        #expect(MessageID(hex: id.description) == id)
        #expect(MessageID(hex: "xyz") == nil)
    }
}
