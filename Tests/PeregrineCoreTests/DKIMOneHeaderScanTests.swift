import Foundation
import Testing
@testable import PeregrineDKIM
@testable import PeregrineDaemon
import PeregrineEngine
import PeregrineConfig
import PeregrineTestSupport

/// Issue 18: SMTP injection scans a message's header section once
/// (HeaderSection) and the DKIM signer reuses that scan, shifted to the
/// message it signs (added fields above, X-Virtual-MTA/X-Job/... dropped),
/// instead of scanning the result again. The translation must give exactly
/// what a fresh scan of the signed message gives, or signatures would break.
@Suite(.blockingIO) struct DKIMOneHeaderScanTests {
    /// The message as injection signs it: `prefix`, then `original` without `dropped`.
    static func edited(_ original: [UInt8], prefix: [UInt8], dropped: [Range<Int>]) -> [UInt8] {
        var out = prefix
        var cursor = 0
        for r in dropped.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if r.lowerBound > cursor { out += original[cursor..<r.lowerBound] }
            cursor = max(cursor, r.upperBound)
        }
        if cursor < original.count { out += original[cursor...] }
        return out
    }

    static func ranges(_ f: DKIMHeaderFields) -> [String] {
        f.fields.map { "\($0.range) \($0.name) \($0.value)" } + ["body \(f.bodyStart)"]
    }

    static let originals: [String] = [
        "X-Virtual-MTA: vmta1\r\nFrom: A <a@Customer.Example>\r\nX-Job: 7\r\nSubject: a\r\n folded\r\n\tagain\r\nTo: b@b.example\r\n\r\nbody\r\n",
        "From: a@b.example\r\nX-Job:   spaced   \r\nX-Virtual-MTA:vmta1\r\n\r\n",
        "Subject: only headers, no empty line\r\nX-Job: 1\r\nFrom: x@y.example",
        "From: a@b.example\nX-Job: lf only\nSubject: s\n\nbody\n",
        "From: a@b.example\r\nX-Job: 1\r\nnot a header line\r\nSubject: after\r\n\r\nbody",
        "X-Job: first\r\nX-Job: second\r\nFrom: a@b.example\r\nEmpty:\r\nBlank: \r\n\r\n",
    ]

    @Test func shiftedFieldsAreWhatAFreshScanFinds() {
        let signer = InjectionDKIMSigner()
        for text in Self.originals {
            let original = Array(text.utf8)
            let headers = HeaderSection(original)
            let droppable = headers.fields.filter { f in
                let name = HeaderSection.string(f.name, in: original).lowercased()
                return name == "x-job" || name == "x-virtual-mta"
            }.map(\.range)
            for prefix in ["", "Message-ID: <1@mta.test>\r\n", "Message-ID: <1@mta.test>\r\nDate: Sat, 5 Dec 2026 12:00:00 +0000\r\n"] {
                // Nothing dropped, all droppable fields, and each one twice (two rules naming it).
                for dropped in [[], droppable, droppable + droppable.reversed()] {
                    let message = Self.edited(original, prefix: Array(prefix.utf8), dropped: dropped)
                    var fresh = DKIMHeaderFields()
                    message.withUnsafeBytes { fresh.parse($0) }
                    message.withUnsafeBytes {
                        signer.describe($0, prefixLength: prefix.utf8.count, original: headers, dropped: dropped)
                    }
                    #expect(Self.ranges(signer.fields) == Self.ranges(fresh), "\(text.debugDescription) prefix \(prefix.debugDescription) dropped \(dropped)")
                }
            }
        }
    }

    @Test func fromDomainFromTheScanEqualsTheScanningOne() {
        let froms = ["A <a@Customer.Example>", "a@b.example (comment)", "\"x@y\" <real@Real.Example.>", "no address",
                     "a@b.example,\r\n c@d.example", "<a@exa\r\n mple.com>", "a@", "Name <a@b.example", "a@B.EXAMPLE;",
                     "  a@sub.b.example  "]
        for from in froms {
            let message = Array("Subject: s\r\nFrom: \(from)\r\nTo: t@t.example\r\n\r\nbody\r\n".utf8)
            var fields = DKIMHeaderFields()
            message.withUnsafeBytes { fields.parse($0) }
            let scanning = message.withUnsafeBytes { DKIMMessageHeaders.fromDomain($0) }
            let reused = message.withUnsafeBytes { DKIMMessageHeaders.fromDomain($0, fields: fields) }
            #expect(scanning == reused, "\(from.debugDescription)")
        }
    }

    /// End to end through the injection signer: the signature made from the
    /// shifted scan is byte for byte the one made from a fresh scan.
    @Test func signaturesFromTheReusedScanAreIdentical() throws {
        let keys = try DKIMTestKeys.get()
        let config = try PeregrineConfig.parse("""
            smtp-listener 127.0.0.1:2525
            <source 127.0.0.0/8>
                always-allow-relaying yes
                domain-key rsa,customer.example,\(keys.rsa.privateKeyPath)
                domain-key ed,customer.example,\(keys.ed25519.privateKeyPath)
            </source>

            """, file: "t.conf")
        let original = Array(Self.originals[0].utf8)
        let headers = HeaderSection(original)
        let dropped = headers.fields.filter {
            ["x-job", "x-virtual-mta"].contains(HeaderSection.string($0.name, in: original).lowercased())
        }.map(\.range)
        let prefix = Array("Message-ID: <1@mta.test>\r\n".utf8)
        let message = Self.edited(original, prefix: prefix, dropped: dropped)
        let reusing = InjectionDKIMSigner(), scanning = InjectionDKIMSigner()
        let a = message.withUnsafeBytes {
            reusing.sign($0, prefixLength: prefix.count, original: headers, dropped: dropped, config: config,
                         source: config.sources[0], vmta: "default", recipientDomain: "b.example", now: 1_796_472_000)
        }
        let b = message.withUnsafeBytes {
            scanning.sign($0, config: config, source: config.sources[0], vmta: "default", recipientDomain: "b.example", now: 1_796_472_000)
        }
        guard case .signed(let n) = a, case .signed = b else { Issue.record("not signed: \(a) \(b)"); return }
        #expect(n == 2)
        #expect(reusing.header == scanning.header)
        #expect(String(decoding: reusing.header, as: UTF8.self).contains("h=from:subject:message-id:to"))
    }
}
