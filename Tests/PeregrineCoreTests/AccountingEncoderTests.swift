import Testing
import PeregrineIO
import PeregrineSMTP
@testable import PeregrineSpool
@testable import PeregrineAccounting
@testable import PeregrineEngine

/// The byte encoders of outcome and received records must write exactly the
/// line the String-built `AccountingRecord` gives for the same inputs.
@Suite("Accounting line encoder")
struct AccountingEncoderTests {
    static func message(sender: String = "bounces@sender.example", rcpt: String = "user@gmail.com",
                        orcpt: String? = "rfc822;user@gmail.com", jobId: String? = "job-7",
                        envId: String? = "env-1", firstAttempt: Int64 = t0 - 20,
                        receivedAtWall: Int64 = t0 - 30) -> QueuedMessage {
        let m = QueuedMessage(id: MessageID(hi: 0, lo: 1), sender: sender,
                              recipients: [.init(address: "other@example.net"), .init(address: rcpt, orcpt: orcpt)],
                              vmta: "vmta1", jobId: jobId, envId: envId, receivedAtWall: receivedAtWall,
                              receivedAt: 0, bodySize: 4096, stream: 0)
        m.firstAttemptWall = firstAttempt
        return m
    }

    static func attempt(name: String = "gmail-smtp-in.l.google.com", destination: String = "203.0.113.26",
                        source: String? = "198.51.100.2", esmtp: Bool = true,
                        tls: (String, String)? = nil) throws -> DeliveryAttemptInfo {
        DeliveryAttemptInfo(sourceAddress: try source.map { try SocketAddress(ip: $0, port: 0) },
                            destination: try SocketAddress(ip: destination, port: 25),
                            destinationName: name, esmtp: esmtp, tlsProtocol: tls?.0, tlsCipher: tls?.1)
    }

    static func encoded(_ r: some AccountingRecordEncodable) -> String {
        var line = AccountingLineEncoder()
        r.encodeCSV(into: &line)
        return String(decoding: line.bytes, as: UTF8.self)
    }

    static func viaRecord(_ r: AccountingRecord) -> String {
        var out: [UInt8] = []
        r.appendCSV(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func deliveredLineIsPinned() throws {
        var r = AccountingOutcomeRecord(type: .delivered, timeLogged: t0, message: Self.message(), recipient: 1,
                                        queue: QueueKey(domain: "gmail.com", vmta: "vmta1"),
                                        reply: SMTPReply(250, "2.0.0", "OK 1795941696 x1si"),
                                        connection: try Self.attempt(), category: "")
        let expected = "d,2026-11-29 08:41:36+0000,2026-11-29 08:41:06+0000,bounces@sender.example,user@gmail.com,"
            + "rfc822;user@gmail.com,relayed,2.0.0 (success),smtp;250 2.0.0 OK 1795941696 x1si,"
            + "gmail-smtp-in.l.google.com (203.0.113.26),,smtp,,smtp,198.51.100.2,203.0.113.26,yes,4096,"
            + "vmta1,job-7,env-1,2026-11-29 08:41:16+0000,30,gmail.com/vmta1,,,,\r\n"
        #expect(Self.encoded(r) == expected)
        #expect(Self.viaRecord(r.record) == expected)
        // vmtaPool: the pool the message was injected for, last.
        r.message.pool = "pool1"
        #expect(Self.encoded(r) == expected.dropLast(1) + "pool1\r\n")
        #expect(Self.viaRecord(r.record) == Self.encoded(r))
    }

    static let replies: [SMTPReply] = [
        SMTPReply(250, "2.0.0", "OK"),
        SMTPReply(250, nil, "ok, queued as \"abc\""),
        SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 1, 1),
                  lines: ["The email account that you tried to reach does not exist.", "Please try again, \"quoted\""]),
        SMTPReply(code: 452, enhancedCode: EnhancedStatusCode(4, 2, 2), lines: ["mailbox full\r\n", "  ", ""]),
        SMTPReply(code: 421, enhancedCode: EnhancedStatusCode(4, 7, 28), lines: ["rate\r\n\r\nlimited\n", "again\r"]),
        SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 2, 1), lines: ["disabled"]),  // status text has a comma
        SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 7, 1), lines: ["Rejected: ünïcødé, «policy»"]),
        SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 0, 0), lines: [""]),
        SMTPReply(code: 250, enhancedCode: nil, lines: ["", ""]),
        SMTPReply(code: 354, enhancedCode: nil, lines: ["go ahead "]),
        SMTPReply(code: 999, enhancedCode: nil, lines: ["odd"]),
        SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 123, 999), lines: [" leading space"]),
    ]

    @Test(arguments: replies)
    func outcomeMatchesStringRecord(_ reply: SMTPReply) throws {
        let connections: [DeliveryAttemptInfo?] = [
            nil,
            try Self.attempt(),
            try Self.attempt(name: "mx, \"odd\" name", destination: "2001:db8::25", source: nil, esmtp: false,
                             tls: ("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
            try Self.attempt(name: " padded ", destination: "192.0.2.7", source: "2001:db8::1"),
        ]
        let messages = [
            Self.message(),
            Self.message(sender: "\"odd,sender\"@example.com", rcpt: "jürgen@exämple.de", orcpt: nil,
                         jobId: nil, envId: "env,\"1\"", firstAttempt: 0, receivedAtWall: t0 + 5),
        ]
        for type in [AccountingRecordType.delivered, .bounced, .transient] {
            for m in messages {
                for c in connections {
                    let r = AccountingOutcomeRecord(type: type, timeLogged: t0, message: m, recipient: 1,
                                                    queue: QueueKey(domain: "Exämple.DE", vmta: "pool,a"),
                                                    reply: reply, connection: c,
                                                    category: type == .bounced ? "bad-mailbox" : "")
                    let line = Self.encoded(r)
                    #expect(line == Self.viaRecord(r.record))
                    let rows = try AccountingCSVReader.parse(AccountingRecord.csvHeader + Array(line.utf8))
                    #expect(try rows.first?.record() == r.record)
                }
            }
        }
    }

    @Test func diagnosticWithQuotesAndCommasIsQuotedOnce() {
        var line = AccountingLineEncoder()
        line.dsnDiag(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1),
                               lines: ["Message rejected, see \"policy\"", "for details"]))
        #expect(String(decoding: line.bytes, as: UTF8.self)
                == "\"smtp;550 5.7.1 Message rejected, see \"\"policy\"\" for details\"")
        line.reset()
        line.dsnStatus(SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 2, 1), lines: ["x"]))
        #expect(String(decoding: line.bytes, as: UTF8.self) == "\"5.2.1 (mailbox disabled, not accepting messages)\"")
    }

    @Test func receivedMatchesStringRecord() throws {
        for peer in [try SocketAddress(ip: "198.51.100.77", port: 40000), try SocketAddress(ip: "2001:db8::77", port: 1)] {
            for m in [Self.message(), Self.message(sender: "a,b@example.com", rcpt: "ü@example.com", orcpt: nil,
                                                   jobId: nil, envId: nil)] {
                for user in ["", "alice", "odd,\"user\""] {
                    let r = AccountingReceivedRecord(timeLogged: t0, message: m, recipient: 1, peer: peer, smtpUser: user)
                    #expect(Self.encoded(r) == Self.viaRecord(r.record))
                }
            }
        }
        var pinned = AccountingReceivedRecord(timeLogged: t0, message: Self.message(), recipient: 1,
                                              peer: try SocketAddress(ip: "198.51.100.77", port: 40000))
        #expect(Self.encoded(pinned) == "r,2026-11-29 08:41:36+0000,2026-11-29 08:41:36+0000,bounces@sender.example,"
                + "user@gmail.com,rfc822;user@gmail.com,,,,,,smtp,198.51.100.77,,,,,4096,vmta1,job-7,env-1,,,,,,,\r\n")
        // The SMTP AUTH login is rcvSmtpUser (PowerMTA's name), then the pool (vmtaPool) last.
        let authenticated = AccountingReceivedRecord(timeLogged: t0, message: Self.message(), recipient: 1,
                                                     peer: try SocketAddress(ip: "198.51.100.77", port: 40000), smtpUser: "alice")
        #expect(Self.encoded(authenticated).hasSuffix(",env-1,,,,,,alice,\r\n"))
        #expect(Array(AccountingRecord.fieldNames.suffix(2)) == ["rcvSmtpUser", "vmtaPool"])
        pinned.message.pool = "pool1"
        #expect(Self.encoded(pinned).hasSuffix(",,,,,,,pool1\r\n"))
        #expect(Self.encoded(pinned) == Self.viaRecord(pinned.record))
    }

    @Test(arguments: [
        ("plain", "plain"),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("\"", "\"\"\"\""),
        ("two\r\nlines", "\"two\r\nlines\""),
        ("lf\nonly", "\"lf\nonly\""),
        ("", ""),
        (" padded ", "\" padded \""),
        ("ünïcødé, «x»", "\"ünïcødé, «x»\""),
    ])
    func fieldBuiltFromPiecesIsQuotedLikeAPlainField(_ input: String, _ expected: String) {
        var line = AccountingLineEncoder()
        line.raw("before,")
        let start = line.beginField()
        line.raw(input)
        line.endField(start)
        line.comma()
        #expect(String(decoding: line.bytes, as: UTF8.self) == "before,\(expected),")
        var plain: [UInt8] = []
        AccountingCSV.appendField(input, to: &plain)
        #expect(String(decoding: plain, as: UTF8.self) == expected)
    }

    @Test(arguments: ["0.0.0.0", "255.255.255.255", "10.0.100.9", "127.0.0.1", "1.20.3.199",
                      "::", "::1", "2001:db8::25", "::ffff:192.0.2.1", "fe80::1:2:3:4"])
    func addressesAreSpelledLikeSocketAddressIP(_ ip: String) throws {
        let address = try SocketAddress(ip: ip, port: 25)
        var line = AccountingLineEncoder()
        line.rawIP(address)
        #expect(String(decoding: line.bytes, as: UTF8.self) == address.ip)
        #expect(address.ip == ip)
    }

    @Test func decimalsMatchTheIntegerField() {
        for v in [0, 1, 9, 10, 99, 100, 250, 999, 1000, 65_535, -1, -250, Int.max, Int.min] {
            var line = AccountingLineEncoder()
            line.rawDecimal(v)
            #expect(String(decoding: line.bytes, as: UTF8.self) == String(v))
        }
    }

    @Test func cachedTimestampsMatchTheFormatter() {
        var line = AccountingLineEncoder()
        // Same second, next second, other day, back again, epoch, around midnight and before 1970.
        let times: [Int64] = [t0, t0, t0 + 1, t0 - 86_400, t0, 0, 86_399, 86_400, 951_782_400, -1, 4_102_444_800, t0 + 59]
        for t in times {
            line.reset()
            line.timestamp(t)
            #expect(String(decoding: line.bytes, as: UTF8.self) == AccountingTimestamp.format(t))
        }
    }

    @Test func numericStatusTableMatchesTheTextOne() {
        for cls in [2, 4, 5] {
            for subject in 0...8 {
                for detail in 0...9 {
                    let numeric = AccountingRecord.dsnStatusText(statusClass: cls, subject: subject, detail: detail)
                    #expect(numeric.description == AccountingRecord.dsnStatusText("\(cls).\(subject).\(detail)"))
                }
            }
        }
        #expect(AccountingRecord.dsnStatusText("5.01.1") == "undefined status")
        #expect(AccountingRecord.dsnStatusText("2.0.0") == "success")
        #expect(AccountingRecord.dsnStatusText("4.0.0") == "undefined status")
    }

    @Test func writerTakesOutcomeRecords() throws {
        let dir = makeTempDir("acct-enc")
        let path = dir + "/acct.csv"
        let w = try AccountingWriter(options: AccountingFileOptions(path: path, records: [.delivered]))
        let r = AccountingOutcomeRecord(type: .delivered, timeLogged: t0, message: Self.message(), recipient: 1,
                                        queue: QueueKey(domain: "gmail.com", vmta: "vmta1"),
                                        reply: SMTPReply(250, "2.0.0", "OK"), connection: try Self.attempt(), category: "")
        let log = AccountingLog(writers: [w])
        #expect(!log.accepts(.received))
        log.log(r)
        log.log(AccountingOutcomeRecord(type: .bounced, timeLogged: t0, message: Self.message(), recipient: 1,
                                        queue: QueueKey(domain: "gmail.com", vmta: "vmta1"),
                                        reply: SMTPReply(550, "5.1.1", "no"), connection: nil, category: "bad-mailbox"))
        log.log(r)
        #expect(log.close().isEmpty)
        let text = readText(path)
        #expect(text == String(decoding: AccountingRecord.csvHeader, as: UTF8.self) + Self.encoded(r) + Self.encoded(r))
    }
}
