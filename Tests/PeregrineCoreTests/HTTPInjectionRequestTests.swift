import Testing
import Foundation
import PeregrineIO
import PeregrineSMTP
@testable import PeregrineHTTP
@testable import PeregrineDaemon
import PeregrineConfig

/// The HTTP injection API's request side without sockets: the JSON parser
/// (byte offsets), the field checks (each error names its field), and the
/// `<api-key>` configuration.
@Suite("HTTPInjectionRequest", .timeLimit(.minutes(10)))
struct HTTPInjectionRequestTests {
    func parse(_ text: String, max: Int = 1000) -> Result<HTTPInjectionRequest, APIError> {
        do { return .success(try HTTPInjectionRequest.parse(body: Array(text.utf8), maxRecipients: max)) } catch { return .failure(error) }
    }

    func error(_ text: String, max: Int = 1000) -> APIError? {
        if case .failure(let e) = parse(text, max: max) { return e }
        return nil
    }

    @Test func jsonErrorsGiveTheByteOffset() {
        let cases: [(String, Int)] = [("{\"a\":}", 5), ("{\"a\":1,}", 7), ("[1 2]", 3), ("{\"a\":1e400}", 5), ("[0,-5e999]", 3), ("{\"a\":\"x", 7), ("", 0),
                                      ("{\"a\":1}x", 7), ("{\"a\":tru}", 5), ("{\"a\":\"\\q\"}", 6), ("{\"a\":1,\"a\":2}", 7)]
        for (text, offset) in cases {
            do {
                _ = try JSONParser.parse(Array(text.utf8))
                Issue.record("'\(text)' parsed")
            } catch {
                #expect(error.offset == offset, "\(text): \(error)")
            }
        }
        let e = error("{\"sender\": 12,, }")
        #expect(e?.status == 400)
        #expect(e?.code == "invalid_json")
        #expect(e?.offset == 14)
    }

    @Test func jsonValuesParse() throws {
        let v = try JSONParser.parse(Array(#"{"s":"a\u00e9\ud83d\ude00\n","n":-12,"f":1.5e2,"b":[true,false,null]}"#.utf8))
        #expect(v["s"] == .string("aé😀\n"))
        #expect(v["n"] == .number(-12, integer: -12))
        #expect(v["f"] == .number(150, integer: nil))
        #expect(v["b"] == .array([.bool(true), .bool(false), .null]))
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
    }

    @Test func fieldErrorsNameTheField() {
        let base = #""sender":"s@shop.example","content":{"from":"s@shop.example","text":"x"}"#
        let cases: [(String, Int, String, String?)] = [
            ("[]", 422, "invalid_type", nil),
            (#"{"recipients":["a@b.example"],"content":{"from":"s@x.example","text":"x"}}"#, 422, "missing_field", "sender"),
            ("{\(base)}", 422, "missing_field", "recipients"),
            ("{\(base),\"recipients\":[]}", 422, "invalid_field", "recipients"),
            ("{\(base),\"recipients\":\"a@b.example\"}", 422, "invalid_type", "recipients"),
            ("{\(base),\"recipients\":[\"a@b.example\",\"not an address\"]}", 422, "invalid_address", "recipients[1]"),
            ("{\(base),\"recipients\":[{\"email\":\"a@b.example\",\"substitutions\":{\"n\":[1]}}]}", 422, "invalid_type", "recipients[0].substitutions.n"),
            ("{\(base),\"recipients\":[{\"mail\":\"a@b.example\"}]}", 422, "unknown_field", "recipients[0].mail"),
            ("{\(base),\"recipients\":[\"a@b.example\"],\"extra\":1}", 422, "unknown_field", "extra"),
            ("{\(base),\"recipients\":[\"a@b.example\"],\"raw\":\"Subject: x\\n\\nbody\"}", 422, "conflicting_fields", "raw"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"]}"#, 422, "missing_field", "content"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"raw":"no header line"}"#, 422, "invalid_field", "raw"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"content":{"from":"s@shop.example"}}"#, 422, "missing_field", "content.text"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"content":{"from":"s@shop.example","text":"x","attachments":[{"filename":"a","content":"!!!"}]}}"#,
             422, "invalid_base64", "content.attachments[0].content"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"content":{"from":"s@shop.example","text":"x","headers":{"Content-Type":"x"}}}"#,
             422, "invalid_field", "content.headers.Content-Type"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"content":{"from":"s@shop.example","text":"x","subject":"a\r\nBcc: x@y"}}"#,
             422, "invalid_field", "content.subject"),
            (#"{"sender":"s@shop.example","recipients":["a@b.example"],"content":{"from":"s@shop.example","text":"x"},"dkim":"no"}"#,
             422, "invalid_type", "dkim"),
            ("{\(base),\"recipients\":[\"a@b.example\",\"c@d.example\"]}", 422, "too_many_recipients", "recipients"),
        ]
        for (text, status, code, field) in cases {
            let e = error(text, max: code == "too_many_recipients" ? 1 : 1000)
            #expect(e?.status == status, "\(text)")
            #expect(e?.code == code, "\(text): \(String(describing: e))")
            #expect(e?.field == field, "\(text): \(String(describing: e))")
        }
    }

    @Test func aValidRequestDecodes() throws {
        let text = #"""
        {"sender":"bounce@shop.example","recipients":["a@b.example",{"email":"c@d.example","substitutions":{"name":"Zoë","n":3}}],
         "content":{"from":"Shop <news@shop.example>","subject":"Hi {{name}}","text":"n={{n}} {{unknown}}",
                    "attachments":[{"filename":"f.txt","content_type":"Text/Plain","content":"aGVsbG8="}]},
         "job_id":"job-1","campaign":"spring","virtual_mta":"Pool-A","dkim":false}
        """#
        let r = try parse(text).get()
        #expect(r.sender == "bounce@shop.example")
        #expect(r.recipients.map(\.address) == ["a@b.example", "c@d.example"])
        #expect(r.hasSubstitutions)
        #expect(r.recipients[1].substitute("Hi {{name}}, {{ n }} {{x}}") == "Hi Zoë, 3 {{x}}")
        #expect(r.jobID == "job-1")
        #expect(r.virtualMTA == "pool-a")
        #expect(r.dkim == false)
        guard case .structured(let c) = r.content else { Issue.record("not structured"); return }
        #expect(c.from == MIMEMailbox(name: "Shop", address: "news@shop.example"))
        #expect(c.attachments == [MIMEAttachment(filename: "f.txt", contentType: "text/plain", data: Array("hello".utf8))])
    }

    @Test func rawMessagesGetCRLFAndLongLinesAreRefused() throws {
        let r = try parse(#"{"sender":"s@x.example","recipients":["a@b.example"],"raw":"Subject: x\n\nbody\n"}"#).get()
        #expect(r.content == .raw(Array("Subject: x\r\n\r\nbody\r\n".utf8)))
        let long = String(repeating: "a", count: 999)
        let e = error(#"{"sender":"s@x.example","recipients":["a@b.example"],"raw":"Subject: x\n\n"# + long + "\"}")
        #expect(e?.field == "raw")
        #expect(e?.message.contains("998") == true)
    }

    @Test func credentialsFromBearerAndBasic() {
        typealias S = HTTPInjectionServer<PeregrineIO.EpollLoop>
        #expect(S.credentials("Bearer shop:s3cret:x")! == ("shop", "s3cret:x"))
        #expect(S.credentials("Basic " + Base64.encode(Array("shop:pw".utf8)))! == ("shop", "pw"))
        #expect(S.credentials("Bearer nocolon") == nil)
        #expect(S.credentials("Digest x") == nil)
    }

    @Test func apiKeyBlocksParseAndBadOnesAreRefusedAtTheirLine() throws {
        let hash = try #require(SMTPUserSettings.hashDirectiveValue(password: Array("pw".utf8), iterations: 100_000))
        let good = """
        http-injection-listener 127.0.0.1:8025
        <virtual-mta v1>
        </virtual-mta>
        <api-key shop>
            key-hash \(hash)
            default-virtual-mta v1
            max-message-size 1M
            allowed-sender-domain shop.example, news.example
            max-msg-rate 100/m
            max-rcpt-per-message 50
        </api-key>
        """
        let config = try PeregrineConfig.parse(good, file: "t.conf")
        let key = try #require(config.httpInjection.key(named: "shop"))
        #expect(key.maxMessageSize == 1 << 20)
        #expect(key.allowedSenderDomains == ["shop.example", "news.example"])
        #expect(key.allowsSender(domain: "mail.shop.example"))
        #expect(!key.allowsSender(domain: "evilshop.example"))
        #expect(key.maxRecipients == 50)
        #expect(config.httpInjection.listener?.port == 8025)

        let bad: [(String, String)] = [
            ("<api-key a>\n</api-key>\n", "t.conf:1: "),
            ("<api-key a>\nkey-hash nope\n</api-key>\n", "t.conf:2: "),
            ("<api-key a>\nkey-hash \(hash)\ndefault-virtual-mta nowhere\n</api-key>\n", "t.conf:3: "),
            ("<api-key a>\nkey-hash \(hash)\nmax-msg-rate fast\n</api-key>\n", "t.conf:3: "),
            // TLS uses the injection listeners' certificate: without one, tls=yes cannot start.
            ("http-injection-listener 127.0.0.1:8025 tls=yes\n", "t.conf:1: "),
            ("http-injection-listener 127.0.0.1:8025 tls=maybe\n", "t.conf:1: "),
            ("http-injection-listener 127.0.0.1:8025 ssl=yes\n", "t.conf:1: "),
            ("http-injection-listener 127.0.0.1\n", "t.conf:1: "),
        ]
        for (text, prefix) in bad {
            do {
                _ = try PeregrineConfig.parse(text, file: "t.conf")
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".hasPrefix(prefix), "\(text): \(error)")
            }
        }
    }

    @Test func theOpenAPIDocumentIsJSON() throws {
        let v = try JSONParser.parse(OpenAPIDocument.bytes)
        #expect(v["openapi"] == .string("3.0.3"))
    }
}
