import Testing
@testable import PeregrineSpool

/// The VERP flag of a message record (verp-default, XVERP): version 2 keeps
/// it with RET; a message without it is written exactly as before (version 0
/// or 1), so spools written by older builds recover unchanged.
@Suite struct SpoolVERPFlagTests {
    private func encode(_ env: SpoolEnvelope) -> [UInt8] {
        let body = Array("Subject: v\r\n\r\nbody\r\n".utf8)
        let len = SpoolRecordFormat.headerSize + SpoolRecordFormat.envelopeSize(env) + body.count
        var buf = [UInt8](repeating: 0, count: len)
        let written = buf.withUnsafeMutableBytes { out in
            body.withUnsafeBytes { SpoolRecordFormat.encodeMessage(id: MessageID(hi: 5, lo: 6), envelope: env, states: nil, body: $0,
                                                                into: out.baseAddress!) }
        }
        #expect(written == len)
        return buf
    }

    @Test(arguments: [DSNReturn.unspecified, .full, .headers])
    func verpRoundTripsWithEveryRET(_ ret: DSNReturn) {
        var env = SpoolFixtures.envelope(9, recipients: 4)
        env.ret = ret
        env.verp = true
        let record = encode(env)
        #expect(record[5] == 2)
        record.withUnsafeBytes { raw in
            guard case .record(.message, _) = SpoolRecordFormat.frame(raw) else { Issue.record("no frame"); return }
            let m = SpoolRecordFormat.decodeMessage(record: raw)
            #expect(m?.envelope == env)
            #expect(m?.envelope.verp == true && m?.envelope.ret == ret)
            if let m { #expect(String(decoding: raw[m.bodyOffset...], as: UTF8.self) == "Subject: v\r\n\r\nbody\r\n") }
        }
    }

    /// Without VERP the bytes are those of the older format: version 0, no option bytes.
    @Test func noVERPWritesTheOlderLayout() {
        var env = SpoolFixtures.envelope(6, recipients: 4)
        env.ret = .unspecified
        env.verp = false
        let plain = encode(env)
        #expect(plain[5] == 0)
        env.verp = true
        let flagged = encode(env)
        #expect(flagged.count == plain.count + 2, "RET byte and flags byte")
        plain.withUnsafeBytes { #expect(SpoolRecordFormat.decodeMessage(record: $0)?.envelope.verp == false) }
    }

    /// A flag bit this build does not know is a newer writer's option: the
    /// record is refused rather than decoded without it.
    @Test func unknownFlagBitsAreRefused() {
        var env = SpoolFixtures.envelope(9, recipients: 1)
        env.verp = true
        var record = encode(env)
        // The flags byte follows RET, after id, time and the four envelope fields.
        let payload = Array(record[SpoolRecordFormat.headerSize...])
        var offset = 24
        for _ in 0..<4 { offset += 1 + Int(payload[offset]) }
        #expect(payload[offset] == 0 && payload[offset + 1] == 1, "RET 0 then flags 1")
        // Bit 1 is the wire-form flag (SpoolWireFormFlagTests); bit 2 is nothing yet.
        record[SpoolRecordFormat.headerSize + offset + 1] = 5
        record.withUnsafeBytes { raw in
            #expect(SpoolRecordFormat.decodeMessage(record: raw) == nil)
        }
    }

    /// Version 2 is for message records only; version 3 is nothing yet.
    @Test func versionThreeDoesNotFrame() {
        var env = SpoolFixtures.envelope(9, recipients: 1)
        env.verp = true
        var record = encode(env)
        record[5] = 3
        var crc = CRC32C.checksum(Array(record[4..<12]))
        crc = record.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[16...]), continuing: crc) }
        for i in 0..<4 { record[12 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let framed: Bool = record.withUnsafeBytes { if case .record = SpoolRecordFormat.frame($0) { return true } else { return false } }
        #expect(!framed)
    }
}
