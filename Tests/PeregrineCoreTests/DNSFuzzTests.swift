import Testing
import PeregrineIO
@testable import PeregrineDNS

/// Random and mutated packets must decode to a value or an error, never trap.
@Suite struct DNSFuzzTests {
    @Test func randomBytesNeverTrap() {
        var rng = SeededRandom(seed: 0xD15EA5E)
        var decoded = 0
        for _ in 0..<5_000 {
            let length = Int.random(in: 0...96, using: &rng)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Small counts make it past the header more often.
            if bytes.count >= 12 { for i in 4..<12 { bytes[i] &= (i % 2 == 1) ? 0x03 : 0x00 } }
            if (try? DNSMessage(decoding: bytes)) != nil { decoded += 1 }
        }
        #expect(decoded > 0)
    }

    @Test func mutatedValidPacketsNeverTrap() throws {
        var response = DNSMessage.response(to: .query(id: 3, name: "gmail.com", type: .mx), answers: [
            DNSResourceRecord(name: "gmail.com", ttl: 300, data: .mx(preference: 5, exchange: "gmail-smtp-in.l.google.com")),
            DNSResourceRecord(name: "gmail.com", ttl: 300, data: .mx(preference: 10, exchange: "alt1.gmail-smtp-in.l.google.com")),
        ])
        response.additionals = [DNSResourceRecord(name: "gmail-smtp-in.l.google.com", ttl: 60, data: .a([127, 0, 1, 1]))]
        response.authorities = [DNSResourceRecord(name: "gmail.com", ttl: 60, data: .soa(DNSStartOfAuthority(
            primaryServer: "ns1.google.com", responsibleMailbox: "dns-admin.google.com",
            serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5)))]
        let valid = try response.encode()
        var rng = SeededRandom(seed: 42)
        var errors = 0
        for round in 0..<6_000 {
            var bytes = valid
            switch round % 3 {
            case 0:
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                }
            case 1:
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            default:
                let i = Int.random(in: 12..<bytes.count, using: &rng)
                bytes[i] = [0xC0, 0xFF, 0x3F, 0x40, 0x00][Int.random(in: 0..<5, using: &rng)]
            }
            do {
                let m = try DNSMessage(decoding: bytes)
                // Whatever decodes must encode again (or fail with a value).
                _ = try? m.encode()
            } catch {
                errors += 1
            }
        }
        #expect(errors > 300)
    }
}
