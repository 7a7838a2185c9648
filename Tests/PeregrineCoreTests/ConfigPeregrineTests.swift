import Testing
import Foundation
import PeregrineIO
import PeregrineSMTP
@testable import PeregrineConfig
@testable import PeregrineEngine
@testable import PeregrineDaemon

@Suite struct ConfigPeregrineTests {
    static let full = """
    # every directive the daemon knows
    smtp-listener 0/0:25
    smtp-listener [::1]:2525
    smtp-listener 127.0.0.1
    http-mgmt-port 8080
    http-access 127.0.0.1/32 admin
    http-access 10/8 monitor
    http-access 0/0 none
    spool /var/spool/peregrine-test
    io-backend epoll
    threads 2
    dns-server 127.0.0.53:5353
    dns-server 127.0.0.1
    domain-macro yahoo yahoo.com, aol.com,ymail.com
    host-name mta.example.com
    postmaster postmaster@example.com

    <source 127.0.0.1/32>
        always-allow-relaying yes
        smtp-service yes
        process-x-virtual-mta yes
        process-x-job yes
        default-virtual-mta pool1
        max-message-size 20M
        require-auth no
        add-received-header no
    </source>
    <source 0/0>
        smtp-service no
        max-message-size unlimited
    </source>

    <virtual-mta vmta1>
        smtp-source-host 127.0.0.2 mta1.example.com
        <domain gmail.com>
            max-smtp-out 2
        </domain>
        <domain *>
            queue-priority 70
        </domain>
    </virtual-mta>
    <virtual-mta vmta2>
        smtp-source-host 127.0.0.3 mta2.example.com
    </virtual-mta>
    <virtual-mta-pool pool1>
        virtual-mta vmta1
        virtual-mta vmta2
    </virtual-mta-pool>

    <domain *>
        max-smtp-out 10
        retry-after 5m,10m,1h
        bounce-after 2d
        use-starttls no
    </domain>
    <domain gmail.com>
        max-smtp-out 5
        max-msg-per-connection 50
        max-msg-rate 1000/h
        max-connect-rate 10/m
        max-rcpt-per-transaction 100
        route [127.0.1.1]:2525
        use-starttls yes
        require-starttls yes
        smtp-pattern-list receivers
        backoff-max-msg-rate 60/h
        backoff-max-smtp-out 1
        backoff-max-connect-rate 1/m
        backoff-retry-after 30m
        backoff-to-normal-after 2h
        backoff-to-normal-after-delivery yes
        queue-priority 90
        connect-timeout 30s
        smtp-greeting-timeout 1m
        data-send-timeout 2m
        bounce-upon-no-mx yes
        smtp-421-means-mx-unavailable yes
    </domain>
    <domain $yahoo>
        max-msg-per-connection 20
        backoff-to-normal-after never
    </domain>

    <smtp-pattern-list receivers>
        reply /421 .* Please try again later/ mode=backoff
        reply /\\[TSS04\\]/ suspend=2h
    </smtp-pattern-list>

    <acct-file /var/log/peregrine/acct.csv>
        records d, b,t,tq,r
        max-size 50M
        move-interval 1h
    </acct-file>
    <acct-file /var/log/peregrine/all.csv>
    </acct-file>

    <bounce-category-patterns>
        /unallocated/ inactive-mailbox
    </bounce-category-patterns>
    """

    @Test func parsesEveryDirective() throws {
        let config = try PeregrineConfig.parse(Self.full, file: "full.conf")
        #expect(config.smtpListeners.map(\.description) == ["0.0.0.0:25", "[::1]:2525", "127.0.0.1:25"])
        #expect(config.httpManagement?.description == "127.0.0.1:8080")
        #expect(config.httpAccess.count == 3)
        #expect(config.httpAccess[1] == HTTPAccessRule(network: try ConfigValue.network("10.0.0.0/8"), level: .monitor))
        #expect(config.httpAccessLevel(forIP: "127.0.0.1") == .admin)
        #expect(config.httpAccessLevel(forIP: "10.1.1.1") == .monitor)
        #expect(config.httpAccessLevel(forIP: "192.0.2.1") == HTTPAccessRule.Level.none)
        #expect(config.spoolPath == "/var/spool/peregrine-test")
        #expect(config.ioBackend == .epoll)
        #expect(config.threads == 2)
        #expect(config.dnsServers.map(\.description) == ["127.0.0.53:5353", "127.0.0.1:53"])
        #expect(config.domainMacros == ["yahoo": ["yahoo.com", "aol.com", "ymail.com"]])
        #expect(config.hostName == "mta.example.com")
        #expect(config.postmaster == "postmaster@example.com")

        let local = config.source(forIP: "127.0.0.1")
        #expect(local.alwaysAllowRelaying && local.smtpService && local.processXVirtualMTA && local.processXJob)
        #expect(local.defaultVirtualMTA == "pool1")
        #expect(local.maxMessageSize == 20 << 20)
        #expect(!local.requireAuth && !local.addReceivedHeader)
        #expect(local.location?.line == 18)
        let remote = config.source(forIP: "192.0.2.1")
        #expect(!remote.alwaysAllowRelaying && !remote.smtpService && !remote.requireAuth && remote.maxMessageSize == 0)
        #expect(remote.addReceivedHeader)
        #expect(config.source(for: try SocketAddress(ip: "127.0.0.1", port: 4000)).alwaysAllowRelaying)

        #expect(config.virtualMTAs.map(\.name) == ["vmta1", "vmta2"])
        #expect(config.virtualMTA(named: "VMTA1")?.sourceIP == "127.0.0.2")
        #expect(config.virtualMTA(named: "vmta1")?.hostName == "mta1.example.com")
        #expect(config.virtualMTA(named: "vmta1")?.domains.count == 2)
        #expect(config.pool(named: "pool1")?.members == ["vmta1", "vmta2"])
        #expect(config.virtualMTANames(for: "pool1") == ["vmta1", "vmta2"])
        #expect(config.virtualMTANames(for: "vmta2") == ["vmta2"])
        #expect(config.virtualMTANames(for: "nope").isEmpty)

        #expect(config.patternLists["receivers"]?.rules.count == 2)
        #expect(config.accountingFiles.count == 2)
        #expect(config.accountingFiles[0].path == "/var/log/peregrine/acct.csv")
        #expect(config.accountingFiles[0].records == [.delivered, .bounced, .transient, .transientQueue, .received])
        #expect(config.accountingFiles[0].maxSize == 50 << 20)
        #expect(config.accountingFiles[0].moveInterval == 3600)
        #expect(config.accountingFiles[1].records == nil)
        #expect(config.bounceClassifier.classify(ReplyText(code: 550, lines: ["5.1.1 mailbox unallocated"])) == .inactiveMailbox)
    }

    @Test func effectiveDomainSettings() throws {
        let config = try PeregrineConfig.parse(Self.full, file: "full.conf")
        let gmail = config.settings(forDomain: "Gmail.COM")
        #expect(gmail.maxSMTPOut == 5)
        #expect(gmail.maxMsgPerConnection == 50)
        #expect(gmail.maxMsgRate == .limited(count: 1000, per: .seconds(3600)))
        #expect(gmail.maxConnectRate == .limited(count: 10, per: .seconds(60)))
        #expect(gmail.maxRcptPerTransaction == 100)
        #expect(gmail.retryAfter.intervals == [.seconds(300), .seconds(600), .seconds(3600)])
        #expect(gmail.bounceAfter == .seconds(2 * 86400))
        #expect(gmail.route == HostPort(host: "127.0.1.1", port: 2525, isLiteral: true))
        #expect(gmail.useStartTLS && gmail.requireStartTLS)
        #expect(gmail.smtpPatternList == "receivers")
        #expect(config.patternList(for: gmail)?.name == "receivers")
        #expect(gmail.backoffMaxMsgRate == .limited(count: 60, per: .seconds(3600)))
        #expect(gmail.backoffMaxSMTPOut == 1)
        #expect(gmail.backoffMaxConnectRate == .limited(count: 1, per: .seconds(60)))
        #expect(gmail.backoffRetryAfter.intervals == [.seconds(1800)])
        #expect(gmail.backoffToNormalAfter == .seconds(7200))
        #expect(gmail.backoffToNormalAfterDelivery)
        #expect(gmail.queuePriority == 90)
        #expect(gmail.connectTimeout == .seconds(30))
        #expect(gmail.smtpGreetingTimeout == .seconds(60))
        #expect(gmail.dataSendTimeout == .seconds(120))
        #expect(gmail.bounceUponNoMX && gmail.smtp421MeansMXUnavailable)
        #expect(gmail.maxSMTPOut(inBackoff: true) == 1 && gmail.maxSMTPOut(inBackoff: false) == 5)
        #expect(gmail.maxMsgRate(inBackoff: true) == .limited(count: 60, per: .seconds(3600)))
        #expect(gmail.maxConnectRate(inBackoff: true) == .limited(count: 1, per: .seconds(60)))
        #expect(gmail.retryAfter(inBackoff: true).intervals == [.seconds(1800)])

        // VMTA-nested <domain gmail.com> beats the global one; nested * does not beat global gmail.com.
        let gmailVMTA1 = config.settings(forDomain: "gmail.com", vmta: "vmta1")
        #expect(gmailVMTA1.maxSMTPOut == 2)
        #expect(gmailVMTA1.queuePriority == 90)
        #expect(gmailVMTA1.maxMsgPerConnection == 50)
        #expect(config.settings(forDomain: "gmail.com", vmta: "vmta2").maxSMTPOut == 5)

        // Macro domains: the * defaults plus the macro block.
        let aol = config.settings(forDomain: "aol.com", vmta: "vmta1")
        #expect(aol.maxSMTPOut == 10)
        #expect(aol.maxMsgPerConnection == 20)
        #expect(aol.backoffToNormalAfter == nil)
        #expect(aol.queuePriority == 70)
        #expect(aol.useStartTLS == false)

        // Unlisted domains: * over the built-in defaults.
        let other = config.settings(forDomain: "example.org")
        #expect(other.maxSMTPOut == 10)
        #expect(other.maxRcptPerTransaction == 1000)
        #expect(other.maxMsgRate == .unlimited)
        #expect(other.queuePriority == 50)
        #expect(other.backoffToNormalAfter == .seconds(3600))
        #expect(other.maxSMTPOut(inBackoff: true) == 10)
        #expect(other.maxMsgRate(inBackoff: true) == .unlimited)
        #expect(other.route == nil)

        let defaults = DomainSettings()
        #expect(defaults.maxSMTPOut == 20 && defaults.maxMsgPerConnection == 0)
        #expect(defaults.retryAfter.intervals == [.seconds(600)])
        #expect(defaults.bounceAfter == .seconds(4 * 86400 + 12 * 3600))
        #expect(defaults.connectTimeout == .seconds(120) && defaults.smtpGreetingTimeout == .seconds(300) && defaults.dataSendTimeout == .seconds(180))
        #expect(PeregrineConfig().settings(forDomain: "x.com") == defaults)
    }

    @Test func sourceMatchingPrefersLongestPrefix() throws {
        let config = try PeregrineConfig.parse("""
        <source 0/0>
            always-allow-relaying no
        </source>
        <source 127.0.0.0/8>
            always-allow-relaying yes
        </source>
        <source 127.0.0.9/32>
            smtp-service no
        </source>
        """, file: "s.conf")
        #expect(config.source(forIP: "127.0.0.1").alwaysAllowRelaying)
        #expect(!config.source(forIP: "127.0.0.9").smtpService)
        #expect(!config.source(forIP: "127.0.0.9").alwaysAllowRelaying)
        #expect(!config.source(forIP: "203.0.113.9").alwaysAllowRelaying)
        #expect(PeregrineConfig().source(forIP: "127.0.0.1") == SourceSettings())
        #expect(PeregrineConfig().httpAccessLevel(forIP: "::1") == .admin)
        #expect(PeregrineConfig().httpAccessLevel(forIP: "10.0.0.1") == HTTPAccessRule.Level.none)
    }

    @Test func loadsFromDisk() throws {
        let path = "/tmp/peregrine-config-test-\(getpid()).conf"
        try Self.full.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try PeregrineConfig.load(path: path)
        #expect(config.threads == 2)
        #expect(config.sources.first?.location?.file == path)
    }

    /// Issue 12 item 8: the timeouts of every phase, PowerMTA's names where it has them.
    @Test func everyClientTimeoutIsConfigurablePerDomain() throws {
        let config = try PeregrineConfig.parse("""
            <domain slow.example>
                connect-timeout 11s
                smtp-greeting-timeout 12s
                smtp-ehlo-timeout 13s
                smtp-mail-from-timeout 14s
                smtp-rcpt-to-timeout 15s
                smtp-data-timeout 16s
                data-send-timeout 17s
                smtp-data-termination-timeout 18s
                smtp-rset-timeout 19s
                smtp-quit-timeout 20s
                smtp-starttls-timeout 21s
            </domain>
            shutdown-timeout 2s
            """, file: "t.conf")
        let s = config.settings(forDomain: "slow.example", vmta: "default")
        let client = DeliveryEngine<EpollLoop>.clientConfiguration(heloName: "h.example", policy: s)
        let t = client.timeouts
        #expect(s.connectTimeout == .seconds(11))
        #expect([t.greeting, t.ehlo, t.mail, t.rcpt, t.dataInit, t.dataBlock, t.dataEnd, t.rset, t.quit, t.startTLS]
                == (12...21).map { UInt64($0) * 1_000_000_000 })
        #expect(config.shutdownTimeout == .seconds(2))
        let defaults = DeliveryEngine<EpollLoop>.clientConfiguration(heloName: "h", policy: DomainSettings()).timeouts
        #expect(defaults == SMTPClientTimeouts(), "the defaults stay RFC 5321's")
        #expect(PeregrineConfig().shutdownTimeout == .seconds(30))
    }

    /// Issue 12 item 3: a config without smtp-listener loads, but says what it will listen on.
    @Test func noListenerIsWarnedAbout() throws {
        let none = try PeregrineConfig.parse("spool /tmp/x\n", file: "w.conf")
        #expect(none.warnings.count == 1)
        #expect(none.warnings.first?.contains("no smtp-listener: the daemon will listen on 0.0.0.0:25") == true)
        #expect(none.effectiveSMTPListeners.map(\.description) == ["0.0.0.0:25"])
        let one = try PeregrineConfig.parse("smtp-listener 127.0.0.1:2525\n", file: "w.conf")
        #expect(one.warnings.isEmpty)
        #expect(one.effectiveSMTPListeners.map(\.description) == ["127.0.0.1:2525"])
    }
}
