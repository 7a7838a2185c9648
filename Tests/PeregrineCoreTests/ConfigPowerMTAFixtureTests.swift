import Foundation
import Testing
@testable import PeregrineConfig
@testable import PeregrineDaemon
@testable import PeregrineEngine

/// Configs in the shape PowerMTA operators write (Tests/Fixtures/pmta, our own
/// text from the directive vocabulary of real files) load with no error and
/// with warnings only for directives that do not apply to Peregrine; and the
/// structure they use (include, <spool>, repeated <domain *>, `//`, combined
/// actions) means what it means in PowerMTA.
@Suite struct ConfigPowerMTAFixtureTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pmta").path

    func check(_ name: String) -> (report: ConfigReport, config: PeregrineConfig) {
        ConfigReport.check(path: Self.fixtures + "/" + name, strict: false)
    }

    func expectOnlyNotApplicableWarnings(_ report: ConfigReport) {
        #expect(report.errors.isEmpty, "\(report.lines)")
        for warning in report.warnings {
            #expect(warning.message.contains("not applicable to Peregrine"), "\(warning)")
        }
    }

    @Test func stockSampleLoads() {
        let (report, config) = check("stock-sample.conf")
        expectOnlyNotApplicableWarnings(report)
        #expect(report.warnings.map(\.directive) == ["log-resolution", "deliver-only"], "\(report.lines)")
        #expect(config.spoolPath == "/var/spool/pmta")
        #expect(config.settings(forDomain: "discard.example.org").maxSMTPOut == 800)
        #expect(config.settings(forDomain: "other.example").maxSMTPOut == 20)
        #expect(config.source(forIP: "127.0.0.1").processXVirtualMTA)
        #expect(config.httpAccessLevel(forIP: "::1") == .monitor)
    }

    @Test func espPoolConfigLoads() throws {
        let (report, config) = check("esp-pool.conf")
        expectOnlyNotApplicableWarnings(report)
        #expect(Set(report.warnings.compactMap(\.directive))
                == ["sync-msg-create", "sync-msg-update", "hide-message-source", "max-events-recorded", "ignore-8bitmime"],
                "\(report.lines)")
        #expect(config.virtualMTANames(for: "shared-pool") == ["ip-12", "ip-20"])
        // The vmta's own <domain $gmail> beats the top-level one; the top-level one fills in the rest.
        let gmail = config.settings(forDomain: "googlemail.com", vmta: "ip-10")
        #expect(gmail.maxSMTPOut == 10)
        #expect(gmail.maxMsgPerConnection == 100)
        // The two <domain *> blocks are merged: the second adds to the first.
        let other = config.settings(forDomain: "example.org")
        #expect(other.connectTimeout == .seconds(60))
        #expect(other.maxSMTPOut == 20)
        #expect(other.smtpPatternList == "recover")
        let throttling = try #require(config.patternLists["throttling"])
        #expect(throttling.rules[1].actions == [.backoff, .disableSourceIP(.seconds(7200))])
        #expect(throttling.rules[4].actions == [.backoff, .suspend(.seconds(1800))])
        // `//` is the catch-all: it matches any reply.
        let recover = try #require(config.patternLists["recover"])
        #expect(recover.rules[1].pattern.matches("451 4.3.0 anything at all"))
        // Routing as ESP configs write it: verp-default, queue-to, smtp-hosts, max-msg-rate 0.
        #expect(config.source(forIP: "127.0.0.1").verpDefault)
        #expect(config.settings(forDomain: "outlook.com").queueTo == "microsoft.queue")
        let microsoft = config.settings(forDomain: "microsoft.queue")
        #expect(microsoft.smtpHosts == [HostPort(host: "hotmail.com")] && microsoft.maxSMTPOut == 10)
        #expect(config.settings(forDomain: "seeds.example.net").smtpHosts.map(\.description)
                == ["[127.0.0.50]:2525", "[127.0.0.51]:2525"])
        #expect(config.settings(forDomain: "spamcop.net").holdsDelivery(inBackoff: false))
    }

    @Test func splitConfigLoadsWithIncludes() throws {
        let (report, config) = check("split/main.conf")
        #expect(report.errors.isEmpty && report.warnings.isEmpty, "\(report.lines)")
        #expect(config.virtualMTANames(for: "pool-a") == ["vmta-a1", "vmta-a2"])
        #expect(config.source(forIP: "127.0.0.9").defaultVirtualMTA == "pool-a")
        // <domain *> in main.conf and in conf.d/30-domains.conf are merged.
        let any = config.settings(forDomain: "example.org")
        #expect(any.maxSMTPOut == 10 && any.bounceAfter == .seconds(2 * 86400) && any.smtpPatternList == "isp-throttle")
        // isp/gmail.inc, included inside <virtual-mta vmta-a2> from conf.d/20-vmtas.conf.
        #expect(config.settings(forDomain: "gmail.com", vmta: "vmta-a2").maxSMTPOut == 4)
        #expect(config.settings(forDomain: "gmail.com", vmta: "vmta-a1").maxSMTPOut == 10)
    }

    /// A temporary directory of config files, removed by the caller.
    func directory(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "peregrine-include-\(UUID().uuidString.prefix(8))"
        for (name, text) in files {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test func errorsInIncludedFilesNameThatFileAndLine() throws {
        let dir = try directory([
            "main.conf": "spool /s\ninclude parts/*.conf\ninclude missing.conf\nthreads x\n",
            "parts/a.conf": "<domain a.test>\n    max-smtp-out lots\n</domain>\n",
            "parts/b.conf": "# b\nspool /other\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.load(path: dir + "/main.conf", diagnostics: &d)
        #expect(d.sortedErrors.map(\.description) == [
            "\(dir)/main.conf:3: include: cannot open '\(dir)/missing.conf': No such file or directory (ENOENT)",
            "\(dir)/main.conf:4: threads: 'x' is not a whole number",
            "\(dir)/parts/a.conf:2: max-smtp-out: 'lots' is not a whole number",
            "\(dir)/parts/b.conf:2: spool is already set at \(dir)/main.conf:1",
        ])
    }

    @Test func includeCyclesAreRefusedAndEmptyGlobsWarned() throws {
        let dir = try directory([
            "main.conf": "spool /s\ninclude a.conf\ninclude none.d/*.conf\n",
            "a.conf": "include b.conf\n",
            "b.conf": "include a.conf\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.load(path: dir + "/main.conf", diagnostics: &d)
        #expect(d.errors.count == 1, "\(d.errors)")
        #expect(d.errors.first?.location == ConfigLocation(file: dir + "/b.conf", line: 1))
        #expect(d.errors.first?.message.contains("include cycle") == true, "\(d.errors)")
        #expect(d.errors.first?.message.contains("a.conf -> ") == true, "\(d.errors)")
        #expect(d.warnings.map(\.description) == ["\(dir)/main.conf:3: include: 'none.d/*.conf' matches no file"])
    }

    @Test func spoolBlockAndSpoolDirectiveAreOneSetting() {
        var d = ConfigDiagnostics()
        let config = PeregrineConfig.parse("<spool /var/spool/a>\n    deliver-only no\n</spool>\n", file: "s.conf", diagnostics: &d)
        #expect(config.spoolPath == "/var/spool/a")
        #expect(d.errors.isEmpty)
        #expect(d.warnings.map(\.description).first?.hasPrefix("s.conf:2: deliver-only: not applicable to Peregrine") == true, "\(d.warnings)")
        var twice = ConfigDiagnostics()
        _ = PeregrineConfig.parse("spool /a\n<spool /b>\n</spool>\n<spool /c>\n  frob 1\n</spool>\n", file: "s.conf", diagnostics: &twice)
        #expect(twice.sortedErrors.map(\.description) == [
            "s.conf:2: <spool /b>: the spool is already set at line 1 (Peregrine uses one spool directory)",
            "s.conf:4: <spool /c>: the spool is already set at line 1 (Peregrine uses one spool directory)",
        ])
    }

    /// A directive set in two <domain *> blocks: the later applies, and the operator is told.
    @Test func repeatedDomainBlocksMergeAndOverlapsAreWarned() {
        var d = ConfigDiagnostics()
        let config = PeregrineConfig.parse("<domain *>\n  max-smtp-out 5\n  retry-after 1m\n</domain>\n<domain *>\n  max-smtp-out 7\n</domain>\n",
                                           file: "m.conf", diagnostics: &d)
        #expect(d.errors.isEmpty)
        #expect(config.settings(forDomain: "x.test").maxSMTPOut == 7)
        #expect(config.settings(forDomain: "x.test").retryAfter == RetrySchedule([.seconds(60)]))
        #expect(d.warnings.map(\.description) == ["m.conf:6: max-smtp-out is also set for <domain *> at line 2; this later one applies"])
        // Other blocks still may not repeat.
        var vmta = ConfigDiagnostics()
        _ = PeregrineConfig.parse("<virtual-mta v>\n</virtual-mta>\n<virtual-mta v>\n</virtual-mta>\n", file: "m.conf", diagnostics: &vmta)
        #expect(vmta.errors.map(\.description) == ["m.conf:3: <virtual-mta v> is already defined at line 1"])
    }

    /// Issue #14's refused list (verp-default, queue-to, smtp-hosts,
    /// <rewrite-list>, dummy-smtp-port) all load now; what Peregrine still
    /// cannot do inside them (LMTP) is refused by name, never ignored.
    @Test func formerlyRefusedDirectivesLoadAndLMTPIsRefused() {
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("""
            <virtual-mta v>
                smtp-source-host 127.0.0.2 v.test
                max-smtp-out 50
            </virtual-mta>
            <source 0/0>
                verp-default yes
                rewrite-list r
            </source>
            <domain *>
                queue-to other.test
            </domain>
            total-max-smtp-out 500
            dummy-smtp-port 2526
            <rewrite-list r>
                mail-from *@old.test *@new.test
            </rewrite-list>
            <domain lmtp.test>
                smtp-hosts lmtp:[127.0.0.1]:24
            </domain>
            """, file: "u.conf", diagnostics: &d)
        let lines = d.sortedErrors.map(\.description)
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.hasPrefix("u.conf:18: smtp-hosts: 'lmtp:[127.0.0.1]:24': LMTP delivery is not supported") == true,
                "\(lines)")
        #expect(d.warnings.isEmpty)
        #expect(NotApplicableDirectives.unsupported.isEmpty)
    }

    /// Shared connection caps and the directives that order and read them.
    @Test func sharedConnectionCapsAndPriorityParse() throws {
        let config = try PeregrineConfig.parse("""
            total-max-smtp-out 500
            <virtual-mta v>
                smtp-source-host 127.0.0.2 v.test
                max-smtp-out 50
            </virtual-mta>
            <domain *>
                queue-priority 70
                allow-priority-interruption no
                smtp-553-means-invalid-mailbox no
            </domain>
            """, file: "c.conf")
        #expect(config.totalMaxSMTPOut == 500)
        #expect(config.virtualMTA(named: "v")?.maxSMTPOut == 50)
        let s = config.settings(forDomain: "x.test", vmta: "v")
        #expect(s.queuePriority == 70 && !s.allowPriorityInterruption && !s.smtp553MeansInvalidMailbox)
        let defaults = try PeregrineConfig.parse("", file: "d.conf").settings(forDomain: "x.test")
        #expect(defaults.queuePriority == 50 && defaults.allowPriorityInterruption && defaults.smtp553MeansInvalidMailbox)
    }

    @Test func ratesPerMinuteAsPowerMTAWritesThem() throws {
        let config = try PeregrineConfig.parse("<domain *>\n  max-msg-rate 50/min\n  backoff-max-msg-rate 5/min\n</domain>\n", file: "r.conf")
        #expect(config.settings(forDomain: "x.test").maxMsgRate == .limited(count: 50, per: .seconds(60)))
        #expect(config.settings(forDomain: "x.test").backoffMaxMsgRate == .limited(count: 5, per: .seconds(60)))
    }

    @Test func sourceHeaderDirectivesAndTLSVersionsParse() throws {
        let config = try PeregrineConfig.parse("""
            total-max-smtp-in 300
            smtp-server-tls-allow-tlsv1 no
            smtp-server-tls-allow-tlsv1.1 false
            smtp-server-tls-allow-tlsv1.2 yes
            <source 10.0.0.0/8>
                jobid-header X-Mailer-RecptId
                remove-header X-Secret, X-Internal
                retain-x-job no
                process-x-envid yes
                allow-starttls yes
            </source>
            <source 0/0>
                process-x-job yes
            </source>
            """, file: "h.conf")
        #expect(config.maxSMTPIn == 300)
        let source = config.source(forIP: "10.1.2.3")
        #expect(source.jobHeaderName == "X-Mailer-RecptId" && !source.retainXJob && source.processXEnvID)
        #expect(source.removeHeaders == ["X-Secret", "X-Internal"])
        #expect(config.source(forIP: "192.0.2.1").jobHeaderName == "X-Job")
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("""
            max-smtp-in 10
            total-max-smtp-in 20
            smtp-server-tls-allow-tlsv1 yes
            smtp-server-tls-allow-tlsv1.3 no
            <source 0/0>
                allow-starttls maybe
                remove-header Bad:Name
            </source>
            """, file: "h.conf", diagnostics: &d)
        #expect(d.sortedErrors.map { "\($0.location.line) \($0.directive ?? "")" } == [
            "2 total-max-smtp-in", "3 smtp-server-tls-allow-tlsv1", "4 smtp-server-tls-allow-tlsv1.3",
            "6 allow-starttls", "7 remove-header",
        ], "\(d.sortedErrors)")
        #expect(d.sortedErrors.first?.message == "total-max-smtp-in is already set at line 1 (as max-smtp-in)")
    }

    @Test func patternListsChooseVirtualMTAsAndRefuseWhatTheyCannot() throws {
        let config = try PeregrineConfig.parse("""
            <virtual-mta a>
                smtp-source-host 127.0.0.2 a.test
            </virtual-mta>
            <pattern-list p>
                mail-from /@bulk\\.test$/ virtual-mta=a
                header X-Class /^promo/i virtual-mta=A
            </pattern-list>
            <source 0/0>
                pattern-list P
            </source>
            """, file: "p.conf")
        let list = try #require(config.vmtaPatternLists["p"])
        #expect(config.source(forIP: "192.0.2.1").patternList == "p")
        #expect(list.virtualMTA(mailFrom: "x@bulk.test", header: { _ in nil }) == "a")
        #expect(list.virtualMTA(mailFrom: "x@other.test", header: { $0 == "X-Class" ? "PROMO-1" : nil }) == "a")
        #expect(list.virtualMTA(mailFrom: "x@other.test", header: { _ in nil }) == nil)
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.parse("""
            <pattern-list p>
                rcpt-to /@gmail\\.com$/ virtual-mta=a
                mail-from /x/ virtual-mta=nowhere
                mail-from /x/ dkim-sign=yes
                header /x/ virtual-mta=a
            </pattern-list>
            <source 0/0>
                pattern-list missing
            </source>
            """, file: "p.conf", diagnostics: &d)
        #expect(d.sortedErrors.map(\.location.line) == [2, 3, 4, 5, 8], "\(d.sortedErrors)")
        #expect(d.sortedErrors.first?.message.hasPrefix("rcpt-to is not supported in <pattern-list> yet") == true)
    }

    /// `host-name` inside a virtual-mta names it in EHLO over smtp-source-host's
    /// name; `dk-sign no` is a not-applicable warning, `dk-sign yes` is refused.
    @Test func virtualMTAHostNameAndDomainKeys() {
        var d = ConfigDiagnostics()
        let config = PeregrineConfig.parse("""
            <virtual-mta v>
                host-name mail.example.com
                smtp-source-host 127.0.0.2 ip2.example.com
            </virtual-mta>
            <domain *>
                dk-sign no
            </domain>
            <domain a.test>
                dk-sign yes
            </domain>
            """, file: "v.conf", diagnostics: &d)
        #expect(config.virtualMTA(named: "v")?.hostName == "mail.example.com")
        #expect(config.virtualMTA(named: "v")?.sourceIP == "127.0.0.2")
        #expect(d.warnings.map(\.location.line) == [6] && d.warnings.first?.message.contains("not applicable") == true)
        #expect(d.errors.map(\.location.line) == [9] && d.errors.first?.message.hasPrefix("dk-sign yes is refused") == true)
    }
}

/// `<domain *.parent>` and `<domain [*.]parent>`: subdomains (and the parent
/// itself with the brackets), ranked between macros and exact names, a
/// longer parent closer than a shorter one.
@Suite struct ConfigWildcardDomainTests {
    @Test func wildcardBlocksApplyBySpecificity() throws {
        let config = try PeregrineConfig.parse("""
            <domain *>
                max-smtp-out 1
            </domain>
            <domain *.mail.yandex.ru>
                max-smtp-out 3
            </domain>
            <domain [*.]Yandex.RU>
                max-smtp-out 2
                retry-after 7m
            </domain>
            <domain mx.mail.yandex.ru>
                max-smtp-out 4
            </domain>
            """, file: "w.conf")
        let out = { (d: String) in config.settings(forDomain: d).maxSMTPOut }
        #expect(out("yandex.ru") == 2 && out("a.yandex.ru") == 2 && out("mail.yandex.ru") == 2)
        #expect(out("b.mail.yandex.ru") == 3 && out("mx.mail.yandex.ru") == 4 && out("other.ru") == 1)
        #expect(out("notyandex.ru") == 1, "a suffix match is on a label boundary")
        #expect(config.settings(forDomain: "b.mail.yandex.ru").retryAfter == config.settings(forDomain: "yandex.ru").retryAfter)
    }

    @Test func aWildcardWithoutAParentIsAnError() {
        for tag in ["*.", "[*.]", "*.*.x.test", "[*.]x..test"] {
            var d = ConfigDiagnostics()
            _ = PeregrineConfig.parse("<domain \(tag)>\n  max-smtp-out 2\n</domain>\n", file: "w.conf", diagnostics: &d)
            #expect(d.sortedErrors.first?.description.hasPrefix("w.conf:1:") == true, "\(tag): \(d.sortedErrors)")
        }
    }
}
