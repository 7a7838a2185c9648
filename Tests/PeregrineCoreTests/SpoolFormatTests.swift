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

    /// RFC 3720 B.4's CRC32C vectors (iSCSI, a source independent of this code), through the table version
    /// and through `checksum` (the crc32 instruction where the CPU has it).
    @Test func crc32cRFC3720VectorsOnBothPaths() {
        let vectors: [([UInt8], UInt32)] = [
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E),
            ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        ]
        for (bytes, crc) in vectors {
            #expect(bytes.withUnsafeBytes { CRC32C.softwareChecksum($0) } == crc)
            #expect(CRC32C.checksum(bytes) == crc)
        }
    }

    /// The hardware path equals the table version at every alignment and length across its 8-byte steps.
    @Test func crc32cHardwareMatchesTheTables() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<4200).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if !CRC32C.usesHardware { Issue.record("this CPU has no SSE4.2 crc32: only the table version ran") }
        data.withUnsafeBytes { all in
            for offset in 0..<8 {
                for length in Array(0..<70) + [511, 4096, 4192 - offset] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[offset ..< offset + length])
                    let seed = UInt32(truncatingIfNeeded: length &* 2_654_435_761)
                    #expect(CRC32C.checksum(slice, continuing: seed) == CRC32C.softwareChecksum(slice, continuing: seed),
                            "offset \(offset), length \(length)")
                }
            }
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
            let m = SpoolRecordFormat.decodeMessage(record: raw)
            #expect(m?.id == id)
            #expect(m?.envelope == env)
            #expect(m?.states == states)
            if let m { #expect(Array(raw[m.bodyOffset...]) == body) }
        }
    }

    @Test(arguments: [DSNReturn.unspecified, .full, .headers])
    func retRoundTripsAndOnlyRETChangesTheVersion(_ ret: DSNReturn) {
        var env = SpoolFixtures.envelope(7, recipients: 3)
        env.ret = ret
        let id = MessageID(hi: 3, lo: 4)
        let body = Array("Subject: x\r\n\r\nbody\r\n".utf8)
        let len = SpoolRecordFormat.headerSize + SpoolRecordFormat.envelopeSize(env) + body.count
        var buf = [UInt8](repeating: 0, count: len)
        let written = buf.withUnsafeMutableBytes { out in
            body.withUnsafeBytes { SpoolRecordFormat.encodeMessage(id: id, envelope: env, states: nil, body: $0, into: out.baseAddress!) }
        }
        #expect(written == len)
        #expect(buf[5] == (ret == .unspecified ? 0 : 1))
        buf.withUnsafeBytes { raw in
            guard case .record(.message, _) = SpoolRecordFormat.frame(raw) else { Issue.record("no frame"); return }
            let m = SpoolRecordFormat.decodeMessage(record: raw)
            #expect(m?.envelope == env)
            #expect(m?.envelope.ret == ret)
            if let m { #expect(Array(raw[m.bodyOffset...]) == body) }
        }
    }

    /// A message record laid out by hand the way spools were written before
    /// RET was kept (version 0, no RET byte) still frames and decodes.
    @Test func recordOfTheOldLayoutStillDecodes() {
        func varfield(_ b: [UInt8]) -> [UInt8] { [UInt8(b.count)] + b }
        func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var payload = le64(11) + le64(12) + le64(1_700_000_000_000)
        payload += varfield(Array("a@b.example".utf8)) + varfield(Array("vmta1".utf8)) + varfield([]) + varfield(Array("E1".utf8))
        payload += [1] + varfield(Array("r@c.example".utf8)) + varfield(Array("rfc822;o@c.example".utf8)) + [4, 0]
        payload += Array("Subject: old\r\n\r\nhi\r\n".utf8)
        var header: [UInt8] = [0x50, 0x52, 0x47, 0x31, 1, 0, 0, 0]
        header += (0..<4).map { UInt8(truncatingIfNeeded: payload.count >> (8 * $0)) }
        var crc = CRC32C.checksum(Array(header[4..<12]))
        crc = payload.withUnsafeBytes { CRC32C.checksum($0, continuing: crc) }
        header += (0..<4).map { UInt8(truncatingIfNeeded: crc >> (8 * UInt32($0))) }
        let record = header + payload
        record.withUnsafeBytes { raw in
            guard case .record(.message, _) = SpoolRecordFormat.frame(raw) else { Issue.record("old record does not frame"); return }
            let m = SpoolRecordFormat.decodeMessage(record: raw)
            #expect(m?.id == MessageID(hi: 11, lo: 12))
            #expect(m?.envelope.ret == .unspecified)
            #expect(m?.envelope.envID == Array("E1".utf8))
            #expect(m?.envelope.recipients.first?.notify == .failure)
            #expect(m?.envelope.recipients.first?.orcpt == Array("rfc822;o@c.example".utf8))
            if let m { #expect(String(decoding: raw[m.bodyOffset...], as: UTF8.self) == "Subject: old\r\n\r\nhi\r\n") }
        }
    }

    /// Version 1 exists only for message records: on any other kind it is damage.
    @Test func versionOneOnAnOutcomeRecordIsInvalid() {
        var buf = [UInt8](repeating: 0, count: SpoolRecordFormat.outcomeRecordSize)
        buf.withUnsafeMutableBytes { SpoolRecordFormat.encodeOutcome(id: MessageID(hi: 9, lo: 8), recipient: 1, state: .bounced, into: $0.baseAddress!) }
        buf[5] = 1
        var crc = CRC32C.checksum(Array(buf[4..<12]))
        crc = buf.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[16...]), continuing: crc) }
        for i in 0..<4 { buf[12 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let ok: Bool = buf.withUnsafeBytes { if case .record = SpoolRecordFormat.frame($0) { return true } else { return false } }
        #expect(!ok)
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
