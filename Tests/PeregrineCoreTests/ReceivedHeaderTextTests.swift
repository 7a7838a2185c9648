import Testing
@testable import PeregrineDaemon

// Issue 12 item 7, second line of defence: whatever the session let through,
// peer text in the Received header can never end the header line.
@Suite struct ReceivedHeaderTextTests {
    @Test func peerBytesThatCouldEndOrBendTheHeaderAreEscaped() {
        #expect(receivedHeaderText("mx.example.com") == "mx.example.com")
        #expect(receivedHeaderText("[192.0.2.1]") == "[192.0.2.1]")
        #expect(receivedHeaderText("a\rX-Injected: yes") == "a\\x0DX-Injected:\\x20yes")
        #expect(receivedHeaderText("a\nb\tc\u{7F}") == "a\\x0Ab\\x09c\\x7F")
        #expect(receivedHeaderText("x (comment) <y> \\") == "x\\x20\\x28comment\\x29\\x20\\x3Cy\\x3E\\x20\\x5C")
        #expect(receivedHeaderText("caf\u{E9}") == "caf\\xC3\\xA9")
        for b in UInt8(0)...UInt8(255) {
            let escaped = receivedHeaderText(String(decoding: [UInt8(ascii: "a"), b], as: UTF8.self))
            #expect(!escaped.utf8.contains(where: { $0 < 0x21 || $0 > 0x7e }), "byte \(b)")
        }
    }
}
