import Foundation
import Testing
@testable import PeregrineConfig
@testable import PeregrineDaemon
@testable import PeregrineEngine
import PeregrineIO
import PeregrineSMTP
import PeregrineSpool

/// The PowerMTA directives issue #14 listed as refused: `verp-default` (and
/// XVERP), `smtp-hosts`, `queue-to`, `max-msg-rate 0`; parsed, applied, and
/// refused clearly where Peregrine cannot follow (LMTP).
@Suite struct PowerMTARoutingDirectiveTests {
    // MARK: VERP

    @Test func verpReturnPathEncodesTheRecipient() {
        #expect(VERP.returnPath(sender: "bounces@esp.example", recipient: "user@isp.example")
                == "bounces+user=isp.example@esp.example")
        // A recipient with its own '+' and a sender with '-' both survive, and the bounce processor reads them back.
        let vp = VERP.returnPath(sender: "list-bounces@esp.example", recipient: "a+tag@isp.example")
        #expect(vp == "list-bounces+a+tag=isp.example@esp.example")
        #expect(InboundReportParser.verpRecipient(vp) == "a+tag@isp.example")
        // The null sender and addresses without a domain are left alone.
        #expect(VERP.returnPath(sender: "", recipient: "user@isp.example") == "")
        #expect(VERP.returnPath(sender: "postmaster", recipient: "user@isp.example") == "postmaster")
        #expect(VERP.returnPath(sender: "b@esp.example", recipient: "user") == "b@esp.example")
    }

    @Test func xverpOnMailFrom() throws {
        func mail(_ line: String) -> Result<SMTPCommand, SMTPReply> { SMTPCommandParser.parse(Array(line.utf8)) }
        guard case .success(.mail(let plain)) = mail("MAIL FROM:<b@esp.example>") else { Issue.record("MAIL"); return }
        #expect(!plain.xverp)
        guard case .success(.mail(let v)) = mail("MAIL FROM:<b@esp.example> XVERP SIZE=10") else { Issue.record("XVERP"); return }
        #expect(v.xverp && v.size == 10)
        guard case .success(.mail(let d)) = mail("MAIL FROM:<b@esp.example> xverp=+=") else { Issue.record("XVERP=+="); return }
        #expect(d.xverp)
        // Other delimiters would give return paths the bounce processor cannot read.
        guard case .failure(let reply) = mail("MAIL FROM:<b@esp.example> XVERP=-=") else { Issue.record("XVERP=-="); return }
        #expect(reply.code == 501)
    }

    @Test func verpDefaultParsesInSource() throws {
        let config = try PeregrineConfig.parse("""
            <source 127.0.0.1/32>
                always-allow-relaying yes
                verp-default yes
            </source>
            <source 0/0>
                verp-default no
            </source>
            """, file: "t.conf")
        #expect(config.source(forIP: "127.0.0.1").verpDefault)
        #expect(!config.source(forIP: "10.0.0.1").verpDefault)
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("<source 0/0>\n    verp-default maybe\n</source>\n", file: "v.conf", diagnostics: &d)
        #expect(d.errors.count == 1 && d.errors[0].description.hasPrefix("v.conf:2:"), "\(d.errors)")
    }

    /// The engine sends a VERP message one recipient per transaction, each
    /// with its own return path; the flag survives `part(keeping:)`.
    @Test func verpMessageKeepsItsFlagInParts() {
        let m = QueuedMessage(id: MessageID(hi: 1, lo: 1), sender: "b@esp.example",
                              recipients: [.init(address: "a@x.test"), .init(address: "b@x.test")], vmta: "v", jobId: nil,
                              envId: nil, receivedAtWall: 0, receivedAt: 0, bodySize: 10, stream: 0, verp: true)
        #expect(m.verp && m.part(keeping: [1]).verp)
    }

    // MARK: smtp-hosts, queue-to

    @Test func smtpHostsParse() throws {
        let config = try PeregrineConfig.parse("""
            <domain a.test>
                smtp-hosts [127.0.0.1]:2525, mx.relay.test smtp:[relay2.test]:587
            </domain>
            <domain b.test>
                smtp-hosts 10.1.2.3
            </domain>
            """, file: "t.conf")
        let a = config.settings(forDomain: "a.test").smtpHosts
        #expect(a == [HostPort(host: "127.0.0.1", port: 2525, isLiteral: true), HostPort(host: "mx.relay.test"),
                      HostPort(host: "relay2.test", port: 587, isLiteral: true)])
        #expect(config.settings(forDomain: "b.test").smtpHosts == [HostPort(host: "10.1.2.3")])
        #expect(config.settings(forDomain: "c.test").smtpHosts.isEmpty)
    }

    @Test func smtpHostsRefusesLMTPAndBadHosts() {
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("""
            <domain a.test>
                smtp-hosts lmtp:[127.0.0.1]:24
            </domain>
            <domain b.test>
                smtp-hosts [127.0.0.1
            </domain>
            <domain c.test>
                queue-to *.wild
            </domain>
            """, file: "h.conf", diagnostics: &d)
        let lines = d.sortedErrors.map(\.description)
        #expect(lines.count == 3, "\(lines)")
        #expect(lines.first?.hasPrefix("h.conf:2: smtp-hosts: 'lmtp:[127.0.0.1]:24': LMTP delivery is not supported") == true, "\(lines)")
        #expect(lines.dropFirst().map { String($0.prefix(while: { $0 != " " })) } == ["h.conf:5:", "h.conf:8:"], "\(lines)")
    }

    @Test func queueToNamesTheQueueDomain() throws {
        let config = try PeregrineConfig.parse("""
            domain-macro hotmail hotmail.test,outlook.test
            <domain $hotmail>
                queue-to Hotmail.Queue
            </domain>
            <domain hotmail.queue>
                smtp-hosts [127.0.0.5]:2525
                max-smtp-out 3
            </domain>
            """, file: "t.conf")
        let policies = ConfigPolicySource(config: config)
        #expect(policies.queueDomain(for: "outlook.test", vmta: "default") == "hotmail.queue")
        #expect(policies.queueDomain(for: "other.test", vmta: "default") == "other.test")
        #expect(policies.policy(for: QueueKey(domain: "hotmail.queue", vmta: "default")).maxSMTPOut == 3)
    }

    /// smtp-hosts: entries in order; a bare name is looked up by MX on the
    /// entry's port, a bracketed name by address; a failed entry is skipped.
    @Test func routerResolvesSMTPHostsInOrder() throws {
        let config = try PeregrineConfig.parse("""
            <domain a.test>
                smtp-hosts nomx.test, [127.0.0.7]:2525, relay.test:2626, [named.test]
            </domain>
            <domain b.test>
                smtp-hosts nomx.test
            </domain>
            """, file: "t.conf")
        var asked: [String] = []
        let router = DaemonRouter(policies: ConfigPolicySource(config: config), mxLookup: { domain, done in
            asked.append("mx:\(domain)")
            if domain == "nomx.test" { done(.failure(.noMailHost("nomx.test: NXDOMAIN"))); return }
            done(.success([RouteHost(name: "mx1.\(domain)", address: try! SocketAddress(ip: "127.0.0.8", port: 25))]))
        }, addressLookup: { host, port, done in
            asked.append("a:\(host):\(port)")
            done(.success([RouteHost(name: host, address: try! SocketAddress(ip: "127.0.0.9", port: port))]))
        })
        var result: Result<[RouteHost], RouteFailure>?
        router.hosts(for: QueueKey(domain: "a.test", vmta: "v")) { result = $0 }
        let hosts = try #require(try? result?.get())
        #expect(hosts.map { "\($0.name) \($0.address.ip):\($0.address.port)" }
                == ["127.0.0.7 127.0.0.7:2525", "mx1.relay.test 127.0.0.8:2626", "named.test 127.0.0.9:25"])
        #expect(asked == ["mx:nomx.test", "mx:relay.test", "a:named.test:25"])
        // Every entry failing permanently is no mail host (bounce-upon-no-mx decides).
        router.hosts(for: QueueKey(domain: "b.test", vmta: "v")) { result = $0 }
        #expect(result == .failure(.noMailHost("smtp-hosts: nomx.test: NXDOMAIN")))
    }

    // MARK: max-msg-rate 0

    @Test func zeroMessageRateHoldsTheQueue() throws {
        let config = try PeregrineConfig.parse("""
            <domain *>
                max-msg-rate 100/h
            </domain>
            <domain trap.test>
                max-msg-rate 0
            </domain>
            <domain paused.test>
                max-msg-rate 0/h
            </domain>
            <domain slow.test>
                backoff-max-msg-rate 0
            </domain>
            """, file: "t.conf")
        let trap = config.settings(forDomain: "trap.test")
        #expect(trap.holdsDelivery(inBackoff: false) && trap.holdsDelivery(inBackoff: true))
        #expect(config.settings(forDomain: "paused.test").holdsDelivery(inBackoff: false))
        let slow = config.settings(forDomain: "slow.test")
        #expect(!slow.holdsDelivery(inBackoff: false) && slow.holdsDelivery(inBackoff: true))
        #expect(slow.maxMsgRate == .limited(count: 100, per: .seconds(3600)))
        #expect(!config.settings(forDomain: "other.test").holdsDelivery(inBackoff: true))
        // The throttle is closed while the rate is 0: no connection, no message.
        let q = DeliveryQueue(key: QueueKey(domain: "trap.test", vmta: "v"), policy: trap)
        #expect(!q.isSendable(now: 1))
        let open = DeliveryQueue(key: QueueKey(domain: "slow.test", vmta: "v"), policy: slow)
        #expect(open.isSendable(now: 1))
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("<domain x.test>\n    max-msg-rate 0/zz\n</domain>\n", file: "z.conf", diagnostics: &d)
        #expect(d.errors.count == 1, "the interval of 0/… must still be one: \(d.errors)")
    }
}

/// `<rewrite-list>`: its rules, its errors, and the rewrite a source applies.
@Suite struct RewriteListTests {
    static let config = """
        <rewrite-list brand>
            mail-from *@old.example *@new.example
            mail-from Billing@* bills@*
            header-from *@old.example news@new.example
            rcpt-to typo@gmial.test typo@gmail.test
            rcpt-to *@gmial.test *@gmail.test
        </rewrite-list>
        <source 127.0.0.1/32>
            always-allow-relaying yes
            rewrite-list Brand
        </source>
        """

    @Test func rulesRewriteFirstMatchOnly() throws {
        let config = try PeregrineConfig.parse(Self.config, file: "r.conf")
        let list = try #require(config.rewriteLists["brand"])
        #expect(config.source(forIP: "127.0.0.1").rewriteList == "brand")
        #expect(list.rewrite("Ann@Old.Example", .mailFrom) == "Ann@new.example")
        #expect(list.rewrite("billing@shop.test", .mailFrom) == "bills@shop.test")
        #expect(list.rewrite("ann@other.example", .mailFrom) == "ann@other.example")
        #expect(list.rewrite("ann@old.example", .headerFrom) == "news@new.example")
        #expect(list.rewrite("typo@gmial.test", .rcptTo) == "typo@gmail.test")
        #expect(list.rewrite("bob@gmial.test", .rcptTo) == "bob@gmail.test")
        // A field's rules do not apply to another field.
        #expect(list.rewrite("ann@old.example", .rcptTo) == "ann@old.example")
        let rewrite = InjectionRewrite(list: list)
        #expect(rewrite.sender("") == "", "the null sender stays null")
        let message = Array("From: \"Old Shop\" <ann@old.example>\r\nSubject: s\r\n\r\nbody\r\n".utf8)
        message.withUnsafeBytes { bytes in
            let from = rewrite.fromHeader(HeaderSection(bytes), in: bytes)
            #expect(from.map { String(decoding: $0.line, as: UTF8.self) } == "From: \"Old Shop\" <news@new.example>\r\n")
            #expect(from?.drop.lowerBound == 0)
        }
    }

    @Test func badRulesAndUnknownListsAreErrors() {
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("""
            <rewrite-list r>
                mail-from *@old.example
                header-to *@a.test *@b.test
                rcpt-to a*@x.test b@x.test
                mail-from a@x.test <b@x.test>
            </rewrite-list>
            <source 0/0>
                rewrite-list missing
            </source>
            """, file: "r.conf", diagnostics: &d)
        let lines = d.sortedErrors.map { String($0.description.prefix(while: { $0 != " " })) }
        #expect(lines == ["r.conf:2:", "r.conf:3:", "r.conf:4:", "r.conf:5:", "r.conf:8:"], "\(d.sortedErrors)")
    }
}
