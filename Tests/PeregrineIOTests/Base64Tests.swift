import PeregrineIO
import Testing

/// The one Base64 codec, against RFC 4648 §10's test vectors and the three
/// ways its callers read input (AUTH strict, DKIM folded, hash strings unpadded).
@Suite struct Base64Tests {
    static let vectors: [(String, String)] = [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
    ]

    @Test func rfc4648VectorsRoundTrip() {
        for (plain, encoded) in Self.vectors {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.decode(Array(encoded.utf8)) == Array(plain.utf8), "\(encoded)")
            let unpadded = encoded.replacingOccurrences(of: "=", with: "")
            #expect(Base64.encode(Array(plain.utf8), padded: false) == unpadded)
            #expect(Base64.decode(Array(unpadded.utf8), rules: .unpadded) == Array(plain.utf8))
        }
    }

    @Test func strictRefusesWhatAUTHMustNotAccept() {
        for bad in ["Zg=", "Zg", "Z g==", "Zg==Zg==", "Zg===", "Zm9v!", "Zm9v\r\n"] {
            #expect(Base64.decode(Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func foldedSkipsWhitespaceButNotDataAfterPadding() {
        #expect(Base64.decode(Array("Zm9v\r\n YmFy".utf8), rules: .folded) == Array("foobar".utf8))
        #expect(Base64.decode(Array("Zm8".utf8), rules: .folded) == Array("fo".utf8))
        #expect(Base64.decode(Array("Zg==Zg".utf8), rules: .folded) == nil)
    }

    @Test func unpaddedReadsPasslibsDotAndRefusesPadding() {
        #expect(Base64.decode(Array("..8".utf8), rules: .unpadded) == Base64.decode(Array("++8".utf8), rules: .unpadded))
        #expect(Base64.decode(Array("Zg==".utf8), rules: .unpadded) == nil)
    }

    @Test func everyByteValueRoundTrips() {
        let all = (0...255).map { UInt8($0) }
        for n in 0...all.count {
            #expect(Base64.decode(Array(Base64.encode(all[0..<n]).utf8)) == Array(all[0..<n]))
        }
    }
}
