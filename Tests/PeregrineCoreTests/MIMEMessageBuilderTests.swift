import Testing
import Foundation
import PeregrineIO
import PeregrineTestSupport
import PeregrineTLS
@testable import PeregrineSMTP

/// The MIME builder of the HTTP injection API: exact bytes for small cases,
/// then bigger messages read back by Python's `email` package (an
/// independent parser) for structure, decoded headers and intact attachments.
@Suite("MIMEMessageBuilder", .timeLimit(.minutes(10)), .blockingIO)
struct MIMEMessageBuilderTests {
    static let date = "Sat, 5 Dec 2026 15:00:00 +0000"

    @Test func textOnlyASCIIIsSevenBitByteForByte() {
        var c = MIMEContent(from: MIMEMailbox(name: "Shop", address: "news@shop.example"))
        c.to = [MIMEMailbox(address: "a@b.example")]
        c.subject = "Hello"
        c.text = "line one\nline two\n"
        let out = MIMEMessageBuilder.build(c, messageID: "<x1@h>", date: Self.date, boundarySeed: "s1")
        let expected = "From: Shop <news@shop.example>\r\nTo: a@b.example\r\nSubject: Hello\r\n"
            + "Date: \(Self.date)\r\nMessage-ID: <x1@h>\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            + "line one\r\nline two\r\n"
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test func nonASCIISubjectIsOneEncodedWordPerChunkAndBodyQuotedPrintable() {
        var c = MIMEContent(from: MIMEMailbox(address: "a@b.example"))
        c.subject = "Grüße"
        c.text = "café = ok"
        let out = String(decoding: MIMEMessageBuilder.build(c, messageID: "<m@h>", date: Self.date, boundarySeed: "s"), as: UTF8.self)
        // "Grüße" in UTF-8, base64.
        #expect(out.contains("Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"))
        #expect(out.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D ok\r\n"))
    }

    @Test func quotedPrintableSoftBreaksKeepLinesAt76() {
        var out: [UInt8] = []
        let line = Array("é".utf8) + Array(String(repeating: "a", count: 200).utf8)
        MIMEMessageBuilder.appendQuotedPrintableLine(line, into: &out)
        let lines = String(decoding: out, as: UTF8.self).components(separatedBy: "\r\n")
        #expect(lines.count > 2)
        for l in lines { #expect(l.utf8.count <= 76) }
        for l in lines.dropLast() { #expect(l.hasSuffix("=")) }
        // Leading dot and trailing space are encoded.
        var dot: [UInt8] = []
        MIMEMessageBuilder.appendQuotedPrintableLine(Array(".end ".utf8), into: &dot)
        #expect(String(decoding: dot, as: UTF8.self) == "=2Eend=20")
    }

    @Test func base64LinesAre76Characters() {
        var out: [UInt8] = []
        MIMEMessageBuilder.appendBase64Lines(Array(repeating: 0xff, count: 200), into: &out)
        let lines = String(decoding: out, as: UTF8.self).components(separatedBy: "\r\n")
        #expect(lines.map(\.count) == [76, 76, 76, 40])
    }

    @Test func longSubjectEncodedWordsStayUnder76() {
        var c = MIMEContent(from: MIMEMailbox(address: "a@b.example"))
        c.subject = String(repeating: "Ünïcödé ", count: 30)
        c.text = "x"
        let out = String(decoding: MIMEMessageBuilder.build(c, messageID: "<m@h>", date: Self.date, boundarySeed: "s"), as: UTF8.self)
        let head = out.components(separatedBy: "\r\n\r\n")[0]
        for l in head.components(separatedBy: "\r\n") { #expect(l.utf8.count <= 78, "\(l)") }
    }

    @Test func textWithBoundaryMarkerGoesQuotedPrintable() {
        var c = MIMEContent(from: MIMEMailbox(address: "a@b.example"))
        c.text = "--=_alt_s\n"
        c.html = "<p>x</p>"
        let out = String(decoding: MIMEMessageBuilder.build(c, messageID: "<m@h>", date: Self.date, boundarySeed: "s"), as: UTF8.self)
        #expect(out.contains("--=3D_alt_s"))
    }

    /// The full structure parsed by Python: multipart/mixed > (alternative > plain, html), attachments.
    @Test func pythonEmailReadsStructureHeadersAndAttachments() throws {
        let python = try #require(findTool("python3"), "python3 is needed to parse the message independently")
        var c = MIMEContent(from: MIMEMailbox(name: "Zoë Ünïcode", address: "zoe@shop.example"))
        c.to = [MIMEMailbox(name: "Bob \"the\" Builder", address: "bob@b.example"), MIMEMailbox(address: "c@c.example")]
        c.subject = "Prüfung — 日本語のテスト with a long tail to force folding across several encoded words"
        c.text = "Hällo\n" + String(repeating: "long line ", count: 200) + "\n.starts with a dot\n"
        c.html = "<p>Hällo</p>\n"
        c.headers = [("X-Note", "naïve header"), ("X-Plain", "plain")]
        let binary = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        c.attachments = [MIMEAttachment(filename: "report.bin", contentType: "application/octet-stream", data: binary),
                         MIMEAttachment(filename: "résumé.txt", contentType: "text/plain", data: Array("hi\n".utf8))]
        let out = MIMEMessageBuilder.build(c, messageID: "<abc@h>", date: Self.date, boundarySeed: "seed9")
        for l in String(decoding: out, as: UTF8.self).components(separatedBy: "\r\n") { #expect(l.utf8.count <= 998) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mime-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.eml")
        try Data(out).write(to: file)
        let script = #"""
        import sys, json, email, email.policy, hashlib
        msg = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
        parts = list(msg.walk())
        body = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        atts = [(a.get_filename(), a.get_content_type(), hashlib.sha256(a.get_payload(decode=True)).hexdigest()) for a in msg.iter_attachments()]
        print(json.dumps({"subject": str(msg["subject"]), "from": str(msg["from"]), "to": str(msg["to"]),
            "note": str(msg["x-note"]), "types": [p.get_content_type() for p in parts],
            "text": body.get_content(), "html": html.get_content(), "atts": atts,
            "defects": [str(d) for p in parts for d in p.defects]}))
        """#
        let (status, output) = runTool(python, ["-c", script, file.path])
        #expect(status == 0, "\(output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect(json["subject"] as? String == c.subject)
        #expect(json["from"] as? String == "Zoë Ünïcode <zoe@shop.example>")
        #expect((json["to"] as? String)?.contains("bob@b.example") == true)
        #expect(json["note"] as? String == "naïve header")
        #expect(json["types"] as? [String] == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html",
                                                 "application/octet-stream", "text/plain"])
        let text = (json["text"] as? String)?.replacingOccurrences(of: "\r\n", with: "\n")
        #expect(text == c.text)
        #expect((json["html"] as? String)?.replacingOccurrences(of: "\r\n", with: "\n") == c.html)
        let atts = try #require(json["atts"] as? [[String]])
        #expect(atts.count == 2)
        #expect(atts.first == ["report.bin", "application/octet-stream", sha256Hex(binary)])
        #expect(atts.last?.first == "résumé.txt")
        #expect((json["defects"] as? [String])?.isEmpty == true, "\(json["defects"] ?? "")")
    }

    func sha256Hex(_ bytes: [UInt8]) -> String {
        PeregrineTLS.sha256(bytes).map { String(format: "%02x", $0) }.joined()
    }
}
