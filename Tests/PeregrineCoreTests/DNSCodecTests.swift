import Testing
@testable import PeregrineDNS

@Suite struct DNSCodecTests {
    @Test func queryEncodingMatchesTheWireFormat() throws {
        let bytes = try DNSMessage.query(id: 0x1234, name: "gmail.com", type: .mx).encode()
        #expect(bytes == [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            5, 0x67, 0x6D, 0x61, 0x69, 0x6C, 3, 0x63, 0x6F, 0x6D, 0,
            0x00, 0x0F, 0x00, 0x01,
        ])
        let decoded = try DNSMessage(decoding: bytes)
        #expect(decoded.id == 0x1234 && !decoded.isResponse && decoded.recursionDesired)
        #expect(decoded.questions == [DNSQuestion(name: "gmail.com", type: .mx)])
        #expect(try DNSMessage.query(id: 1, name: "example.com.", type: .aaaa).encode().count == 12 + 13 + 4)
    }

    /// A response as a real server writes it: owner names and exchanges compressed against the question.
    @Test func decodesCompressedMXResponse() throws {
        var p: [UInt8] = [0xBE, 0xEF, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01]
        p += [5] + Array("gmail".utf8) + [3] + Array("com".utf8) + [0, 0x00, 0x0F, 0x00, 0x01]  // question at 12
        // answer 1: name ptr 12, MX, IN, ttl 300, rdlen, pref 5, "gmail-smtp-in.l.google" + ptr to "com" (offset 18)
        let exchange1: [UInt8] = [13] + Array("gmail-smtp-in".utf8) + [1] + Array("l".utf8) + [6] + Array("google".utf8) + [0xC0, 18]
        p += [0xC0, 12, 0x00, 0x0F, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2C, 0x00, UInt8(2 + exchange1.count), 0x00, 0x05] + exchange1
        let exchange1Offset = p.count - exchange1.count
        // answer 2: pref 10, "alt1" + ptr to exchange1 suffix "gmail-smtp-in.l.google.com"
        p += [0xC0, 12, 0x00, 0x0F, 0x00, 0x01, 0x00, 0x00, 0x0E, 0x10, 0x00, 9, 0x00, 0x0A, 4] + Array("alt1".utf8) + [0xC0, UInt8(exchange1Offset)]
        // additional: A record for the first exchange
        p += [0xC0, UInt8(exchange1Offset), 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3C, 0x00, 0x04, 142, 250, 1, 26]
        let m = try DNSMessage(decoding: p)
        #expect(m.isResponse && m.recursionAvailable && m.responseCode == .noError && !m.isTruncated)
        #expect(m.answers.count == 2)
        #expect(m.answers[0].ttl == 300)
        #expect(m.answers[1].ttl == 3600)
        let mx = m.mxRecords
        #expect(mx.map(\.preference) == [5, 10])
        #expect(mx.map(\.exchange) == ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"])
        #expect(m.additionals.first?.name == "gmail-smtp-in.l.google.com")
        #expect(m.additionals.first?.ipAddress == "142.250.1.26")
        // Re-encoding compresses too and round-trips.
        let again = try m.encode()
        #expect(again.count <= p.count)
        #expect(try DNSMessage(decoding: again) == m)
    }

    @Test func responseRoundTripForTheSinkResponder() throws {
        let query = try DNSMessage(decoding: DNSMessage.query(id: 77, name: "Yahoo.com", type: .mx).encode())
        var answer = DNSMessage.response(to: query, answers: [
            DNSResourceRecord(name: "yahoo.com", ttl: 60, data: .mx(preference: 1, exchange: "mx1.yahoo.com")),
            DNSResourceRecord(name: "yahoo.com", ttl: 60, data: .mx(preference: 2, exchange: "mx2.yahoo.com")),
        ])
        answer.additionals = [
            DNSResourceRecord(name: "mx1.yahoo.com", ttl: 60, data: .a([127, 0, 2, 1])),
            DNSResourceRecord(name: "mx2.yahoo.com", ttl: 60, data: .aaaa([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])),
            DNSResourceRecord(name: "yahoo.com", ttl: 60, data: .txt([Array("v=spf1 -all".utf8)])),
            DNSResourceRecord(name: "yahoo.com", ttl: 60, data: .unknown([1, 2, 3]), unknownType: DNSRecordType(rawValue: 99)),
            DNSResourceRecord(name: "www.yahoo.com", ttl: 60, data: .cname("yahoo.com")),
            DNSResourceRecord(name: "yahoo.com", ttl: 60, data: .ns("ns1.yahoo.com")),
            DNSResourceRecord(name: "1.2.0.127.in-addr.arpa", ttl: 60, data: .ptr("mx1.yahoo.com")),
        ]
        let bytes = try answer.encode()
        let decoded = try DNSMessage(decoding: bytes)
        #expect(decoded == answer)
        #expect(decoded.id == 77 && decoded.isResponse && decoded.isAuthoritative)
        #expect(decoded.questions.first?.name == "Yahoo.com")
        #expect(decoded.additionals[1].ipAddress == "::1")
        #expect(decoded.additionals[3].type.rawValue == 99)
        #expect(decoded.addresses().isEmpty)
        #expect(DNSMessage(id: 1, answers: answer.additionals).addresses(for: "MX1.yahoo.com") == ["127.0.2.1"])
        // "yahoo" is written once in lower case; every later occurrence is a 2-byte pointer.
        let label: [UInt8] = [5] + Array("yahoo".utf8)
        let occurrences = (0...(bytes.count - label.count)).filter { Array(bytes[$0..<$0 + label.count]) == label }.count
        #expect(occurrences == 1)
    }

    @Test func negativeAnswers() throws {
        let query = DNSMessage.query(id: 9, name: "nope.example", type: .mx)
        var nx = DNSMessage.response(to: query, code: .nameError)
        nx.authorities = [DNSResourceRecord(name: "example", ttl: 900, data: .soa(DNSStartOfAuthority(
            primaryServer: "ns.example", responsibleMailbox: "hostmaster.example",
            serial: 2026112901, refresh: 3600, retry: 600, expire: 86400, minimum: 300)))]
        let decoded = try DNSMessage(decoding: nx.encode())
        #expect(decoded.responseCode == .nameError)
        #expect(decoded.responseCode.description == "NXDOMAIN")
        #expect(decoded.negativeCacheTTL == 300)
        #expect(decoded.mxRecords.isEmpty)
        let servfail = try DNSMessage(decoding: DNSMessage.response(to: query, code: .serverFailure).encode())
        #expect(servfail.responseCode == .serverFailure)
        #expect(servfail.negativeCacheTTL == nil)
        #expect(DNSResponseCode(rawValue: 9).description == "RCODE9")
    }

    @Test func truncationFlagAndUDPLimit() throws {
        let query = DNSMessage.query(id: 5, name: "big.example", type: .a)
        let many = (0..<100).map { DNSResourceRecord(name: "big.example", ttl: 60, data: .a([127, 0, 0, UInt8($0)])) }
        let response = DNSMessage.response(to: query, answers: many)
        let udp = try response.encodeForUDP()
        #expect(udp.count <= 512)
        let decoded = try DNSMessage(decoding: udp)
        #expect(decoded.isTruncated)
        #expect(decoded.answers.count > 10 && decoded.answers.count < 100)
        #expect(try DNSMessage(decoding: response.encodeForUDP(maxSize: 4096)).isTruncated == false)
    }

    @Test func namesWithEscapes() throws {
        let odd = "a\\.b.c\\\\d.\\000x.example"
        let message = DNSMessage.query(id: 1, name: odd, type: .a)
        let bytes = try message.encode()
        #expect(Array(bytes[12..<16]) == [3, UInt8(ascii: "a"), UInt8(ascii: "."), UInt8(ascii: "b")])
        #expect(try DNSMessage(decoding: bytes).questions.first?.name == odd)
        #expect(try DNSMessage.query(id: 1, name: "", type: .a).encode().count == 12 + 1 + 4)
        #expect(try DNSMessage.query(id: 1, name: ".", type: .a).encode().count == 12 + 1 + 4)
    }

    @Test func encodingErrors() {
        func fails(_ name: String) -> Bool {
            do { _ = try DNSMessage.query(id: 1, name: name, type: .a).encode(); return false } catch { return error == .badName(name) }
        }
        #expect(fails("a..b"))
        #expect(fails(".a"))
        #expect(fails(String(repeating: "x", count: 64) + ".com"))
        #expect(fails((0..<60).map { _ in "abcd" }.joined(separator: ".")))
        #expect(fails("bad\\"))
        #expect(fails("bad\\25"))
        #expect(fails("bad\\999x"))
        #expect(throws: DNSError.badData("A record needs 4 bytes, got 3")) {
            try DNSMessage(id: 1, answers: [DNSResourceRecord(name: "a", ttl: 1, data: .a([1, 2, 3]))]).encode()
        }
        #expect(throws: DNSError.badData("AAAA record needs 16 bytes, got 4")) {
            try DNSMessage(id: 1, answers: [DNSResourceRecord(name: "a", ttl: 1, data: .aaaa([1, 2, 3, 4]))]).encode()
        }
        #expect(throws: DNSError.badData("TXT string of 256 bytes (max 255)")) {
            try DNSMessage(id: 1, answers: [DNSResourceRecord(name: "a", ttl: 1, data: .txt([Array(repeating: 0, count: 256)]))]).encode()
        }
    }

    @Test func malformedPacketsAreErrors() {
        func decodeError(_ bytes: [UInt8]) -> DNSError? {
            do { _ = try DNSMessage(decoding: bytes); return nil } catch { return error }
        }
        let header: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
        #expect(decodeError([0, 1, 2]) == .truncated(what: "header", offset: 2))
        #expect(decodeError(header) == .truncated(what: "name", offset: 12))
        // Pointer to itself and a forward pointer.
        #expect(decodeError(header + [0xC0, 12, 0, 1, 0, 1]) == .badPointer(offset: 12, target: 12))
        #expect(decodeError(header + [0xC0, 40, 0, 1, 0, 1]) == .badPointer(offset: 12, target: 40))
        // Two names pointing at each other: the second pointer is forward, so the loop is refused.
        var loop: [UInt8] = [0, 1, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 0]
        loop += [1, 0x61, 0xC0, 16, 0, 1, 0, 1]  // "a" + ptr 16 (forward)
        #expect(decodeError(loop) == .badPointer(offset: 14, target: 16))
        // Out-of-bounds label, reserved label type, truncated pointer.
        #expect(decodeError(header + [10, 0x61]) == .truncated(what: "label", offset: 12))
        #expect(decodeError(header + [0x40, 0]) == .badLabelType(offset: 12, byte: 0x40))
        #expect(decodeError(header + [0xC0]) == .truncated(what: "name pointer", offset: 12))
        // Question without type/class.
        #expect(decodeError(header + [0, 0]) == .truncated(what: "question", offset: 13))
        // A record whose RDLENGTH is wrong, and one whose data runs past the packet.
        let answerHeader: [UInt8] = [0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]
        #expect(decodeError(answerHeader + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3]) == .badRecordData(type: .a, offset: 23))
        #expect(decodeError(answerHeader + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2]) == .truncated(what: "A record data", offset: 23))
        // An MX whose exchange name runs past RDLENGTH.
        #expect(decodeError(answerHeader + [0, 0, 15, 0, 1, 0, 0, 0, 1, 0, 3, 0, 5, 1, 0x61, 0]) == .badRecordData(type: .mx, offset: 23))
        // Name longer than 255 bytes on the wire.
        var long = header
        for _ in 0..<5 { long += [63] + Array(repeating: 0x61, count: 63) }
        long += [0, 0, 1, 0, 1]
        #expect(decodeError(long) == .nameTooLong(offset: 12))
        // A TXT string longer than its record.
        #expect(decodeError(answerHeader + [0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 2, 5, 0x61]) == .badRecordData(type: .txt, offset: 23))
        // Counts promising more records than there are.
        #expect(decodeError([0, 1, 0x81, 0x80, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0]) == .truncated(what: "name", offset: 12))
    }

    @Test func pointerChainsEndAndAreBounded() throws {
        // A legitimate chain: each name points one step further back.
        var p: [UInt8] = [0, 1, 0x81, 0x80, 0, 3, 0, 0, 0, 0, 0, 0]
        p += [3] + Array("com".utf8) + [0, 0, 1, 0, 1]               // q1 at 12: com
        p += [7] + Array("example".utf8) + [0xC0, 12, 0, 1, 0, 1]     // q2 at 21: example.com
        p += [3] + Array("www".utf8) + [0xC0, 21, 0, 1, 0, 1]         // q3 at 35: www.example.com
        let m = try DNSMessage(decoding: p)
        #expect(m.questions.map(\.name) == ["com", "example.com", "www.example.com"])
        // Pointer to pointer to pointer…: fine up to 127 jumps, refused beyond.
        func chainPacket(hops: Int) -> [UInt8] {
            var p: [UInt8] = [0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 1]
            var rdata: [UInt8] = [0]  // a root name at offset 23
            for k in 0..<hops {
                let target = k == 0 ? 23 : 24 + 2 * (k - 1)
                rdata += [0xC0 | UInt8(target >> 8), UInt8(target & 0xFF)]
            }
            p += [0, 0, 99, 0, 1, 0, 0, 0, 0, UInt8(rdata.count >> 8), UInt8(rdata.count & 0xFF)] + rdata
            let last = 24 + 2 * (hops - 1)
            p += [0xC0 | UInt8(last >> 8), UInt8(last & 0xFF), 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]
            return p
        }
        let fine = try DNSMessage(decoding: chainPacket(hops: 126))
        #expect(fine.additionals.first?.name == "")
        #expect(fine.additionals.first?.ipAddress == "127.0.0.1")
        let tooLong = chainPacket(hops: 200)
        #expect(throws: DNSError.tooManyPointers(offset: tooLong.count - 16)) { try DNSMessage(decoding: tooLong) }
    }
}
