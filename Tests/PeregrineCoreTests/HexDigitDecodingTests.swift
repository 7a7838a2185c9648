import Testing
import PeregrineIO
import PeregrineHTTP
import PeregrineEngine

/// The three escapes that decode through UInt8.hexDigitValue: quoted-printable
/// (bounce texts), URL percent escapes (API queries) and JSON \u escapes.
@Suite struct HexDigitDecodingTests {
    @Test func everyByteHasTheHexValueOrNone() {
        for b in UInt8.min...UInt8.max {
            let expected: UInt8? = switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            default: nil
            }
            #expect(b.hexDigitValue == expected, "byte \(b)")
        }
    }

    @Test func quotedPrintableBodyIsDecoded() {
        let message = Array("Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3d ok=\r\nsame line =ZZ\r\n".utf8)
        #expect(MIMEEntity(message).decodedText == "café = oksame line =ZZ\r\n")
    }

    @Test func percentEscapesDecodeAndBadOnesAreRefused() {
        #expect(HTTPRequest.percentDecode("a%2Fb%2fc+d", plusAsSpace: true) == "a/b/c d")
        #expect(HTTPRequest.percentDecode("a%2G", plusAsSpace: false) == nil)
    }

    @Test func jsonUnicodeEscapesDecodeAndBadOnesAreRefused() throws {
        #expect(try JSONParser.parse(Array(#""\u00E9\u00e9""#.utf8)) == .string("éé"))
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#""\u00G9""#.utf8)) }
    }
}
