import Testing
@testable import PeregrineDaemon

// Issue 12 items 4 and 5: the inbound limits and the management token file
// are implemented directives with documented defaults; bad values get file:line.
@Suite struct ConfigInboundLimitTests {
    func parse(_ text: String) throws -> PeregrineConfig { try PeregrineConfig.parse(text, file: "l.conf") }

    func error(_ text: String) -> String? {
        do { _ = try PeregrineConfig.parse(text, file: "l.conf"); return nil } catch { return error.description }
    }

    @Test func defaults() throws {
        let c = try parse("spool /var/spool/p\n")
        #expect(c.maxSMTPIn == 1000)
        #expect(c.maxSMTPInErrors == 10)
        #expect(c.smtpIdleTimeout == .seconds(300))
        #expect(c.smtpSessionTimeout == .seconds(3600))
        #expect(c.managementTokenPath == "/var/spool/p/mgmt-token")
        #expect(c.source(forIP: "127.0.0.1").maxSMTPIn == 100)
    }

    @Test func values() throws {
        let c = try parse("""
            max-smtp-in 50
            max-smtp-in-errors 3
            smtp-idle-timeout 90s
            smtp-session-timeout never
            http-mgmt-token-file /etc/peregrine/token
            <source 10.0.0.0/8>
                max-smtp-in 5
            </source>
            """)
        #expect(c.maxSMTPIn == 50)
        #expect(c.maxSMTPInErrors == 3)
        #expect(c.smtpIdleTimeout == .seconds(90))
        #expect(c.smtpSessionTimeout == nil)
        #expect(c.managementTokenPath == "/etc/peregrine/token")
        #expect(c.source(forIP: "10.1.2.3").maxSMTPIn == 5)
        #expect(c.source(forIP: "192.0.2.1").maxSMTPIn == 100)
    }

    @Test func badValuesNameTheLine() {
        for (text, fragment) in [("max-smtp-in 0", "l.conf:1"), ("max-smtp-in lots", "l.conf:1"),
                                 ("max-smtp-in-errors 0", "l.conf:1"), ("smtp-idle-timeout 10ms", "too short"),
                                 ("smtp-idle-timeout soon", "l.conf:1"), ("smtp-session-timeout 0s", "too short"),
                                 ("\nsmtp-session-timeout forever", "l.conf:2"), ("http-mgmt-token-file", "l.conf:1"),
                                 ("<source 0/0>\n  max-smtp-in -1\n</source>", "l.conf:2"),
                                 ("max-smtp-in 5\nmax-smtp-in 6", "already set")] {
            let e = error(text)
            #expect(e?.contains(fragment) == true, "\(text): \(e ?? "accepted")")
        }
    }
}
