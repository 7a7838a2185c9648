import Testing
@testable import PeregrineSpool

/// The wire-form flag of a message record (bit 1 of the version-2 flags
/// byte): the body dot-stuffs to itself, so delivery may send it straight
/// from the segment. A message without it is written exactly as before.
@Suite struct SpoolWireFormFlagTests {
    private let id = MessageID(hi: 5, lo: 6)

    private func encode(_ env: SpoolEnvelope, body: String = "Subject: w\r\n\r\nbody\r\n") -> [UInt8] {
        let body = Array(body.utf8)
        let len = SpoolRecordFormat.headerSize + SpoolRecordFormat.envelopeSize(env) + body.count
        var buf = [UInt8](repeating: 0, count: len)
        let written = buf.withUnsafeMutableBytes { out in
            body.withUnsafeBytes { SpoolRecordFormat.encodeMessage(id: id, envelope: env, states: nil, body: $0,
                                                                into: out.baseAddress!) }
        }
        #expect(written == len)
        return buf
    }

    @Test(arguments: [(DSNReturn.unspecified, false), (.full, true), (.headers, false), (.unspecified, true)])
    func flagRoundTripsWithRETAndVERP(_ ret: DSNReturn, _ verp: Bool) {
        var env = SpoolFixtures.envelope(9, recipients: 3)
        env.ret = ret
        env.verp = verp
        env.wireForm = true
        let record = encode(env)
        #expect(record[5] == 2)
        record.withUnsafeBytes { raw in
            guard case .record(.message, _) = SpoolRecordFormat.frame(raw) else { Issue.record("no frame"); return }
            let m = SpoolRecordFormat.decodeMessage(record: raw)
            #expect(m?.envelope == env)
            #expect(m?.envelope.wireForm == true && m?.envelope.verp == verp && m?.envelope.ret == ret)
            if let m {
                #expect(String(decoding: raw[m.bodyOffset...], as: UTF8.self) == "Subject: w\r\n\r\nbody\r\n")
                // The delivery check reads the header and envelope only.
                let prefix = UnsafeRawBufferPointer(rebasing: raw[0 ..< m.bodyOffset])
                #expect(SpoolRecordFormat.isWireFormMessage(prefix: prefix, id: id))
                #expect(!SpoolRecordFormat.isWireFormMessage(prefix: prefix, id: MessageID(hi: 5, lo: 7)), "another id")
                #expect(!SpoolRecordFormat.isWireFormMessage(prefix: UnsafeRawBufferPointer(rebasing: prefix[0 ..< 30]), id: id),
                        "a prefix too short to hold the flags")
            }
        }
    }

    /// Without the flag (and without VERP and RET) the record is the oldest
    /// layout, version 0, and reads as not wire form.
    @Test func unflaggedMessagesKeepTheOlderLayout() {
        var env = SpoolFixtures.envelope(6, recipients: 2)
        env.ret = .unspecified
        env.verp = false
        env.wireForm = false
        let plain = encode(env)
        #expect(plain[5] == 0)
        env.wireForm = true
        let flagged = encode(env)
        #expect(flagged.count == plain.count + 2, "RET byte and flags byte")
        plain.withUnsafeBytes { raw in
            #expect(SpoolRecordFormat.decodeMessage(record: raw)?.envelope.wireForm == false)
            #expect(!SpoolRecordFormat.isWireFormMessage(prefix: raw, id: id))
        }
        // VERP alone: version 2 without the wire-form bit.
        env.wireForm = false
        env.verp = true
        encode(env).withUnsafeBytes { #expect(!SpoolRecordFormat.isWireFormMessage(prefix: $0, id: id)) }
    }
}
