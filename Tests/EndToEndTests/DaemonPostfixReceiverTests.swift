#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// Postfix's smtpd (a private instance, scripts/postfix-instance) as the
/// receiver that judges the daemon's deliveries: software nobody here wrote
/// reads the daemon's SMTP, and its own replies (recipient and connection
/// limits, access-map refusals, TLS required) must end up as the right d/t/b
/// records (TEST-AUDIT §5 item 5). Postfix relays nowhere (its relayhost is a
/// closed port): what it accepted stays in its queue, and its log names each
/// queue id, which the daemon's `d` records must quote. Scenario 183 (and 184).
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonPostfixReceiverTests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/postfix-instance").path
    }

    /// Starts a private Postfix on `ip:2525` with `extra` main.cf lines; the caller stops it.
    static func startPostfix(_ dir: TestDirectory, ip: String, extra: String, environment: [String: String] = [:]) throws -> String {
        _ = try #require(findTool("postfix"), "postfix is not installed (scripts/setup installs it)")
        try #require(getuid() == 0, "a private Postfix instance needs root")
        let pfDir = dir.file("postfix")
        // Postfix's daemons run as the postfix user and must reach their directories.
        chmod(dir.path, 0o755)
        var env = environment
        env["POSTFIX_MAIN_CF_EXTRA"] = extra
        let (status, output) = runTool("/bin/bash", [script, "start", pfDir, "\(ip):2525", "127.0.0.1:1"], environment: env)
        try #require(status == 0, "postfix did not start: \(output)")
        try #require(PrivateLoopback.waitForListener(ip, 2525, seconds: 20), "postfix smtpd is not listening on \(ip):2525")
        return pfDir
    }

    static func stopPostfix(_ pfDir: String) { _ = runTool("/bin/bash", [script, "stop", pfDir]) }

    static func maillog(_ pfDir: String) -> String {
        (try? String(contentsOfFile: pfDir + "/maillog", encoding: .utf8)) ?? ""
    }

    /// Postfix's limits and refusals, each with a multi-line reply (its
    /// reject footer): 2 recipients per transaction (452 4.5.3 for the rest),
    /// one connection per client (421 4.7.0 for the others), 550 5.1.1 and
    /// 450 4.2.1 from an access map. The daemon delivers everything Postfix
    /// takes, in as many transactions as it needs, bounces the 5xx and
    /// defers the 4xx, and every record carries Postfix's own words.
    @Test(arguments: BackendKind.testable)
    func postfixLimitsAndRefusalsBecomeTheRightRecords(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 183
        let s = try DaemonEndToEndTests.Scenario("postfix-receiver", scenario, kind)
        let pfIP = E2E.ip(scenario, kind, host: 1)
        let footer = "see https://postmaster.peregrine.test/ for help"
        let pf = try Self.startPostfix(s.dir, ip: pfIP, extra: """
            smtpd_recipient_limit = 2
            smtpd_client_connection_count_limit = 1
            smtpd_client_event_limit_exceptions =
            smtpd_reject_footer = \(footer)
            smtpd_recipient_restrictions = check_recipient_access inline:{ {unknown@pf.test = 550 5.1.1 no such user here}, {busy@pf.test = 450 4.2.1 mailbox busy} }, permit_mynetworks, reject
            """)
        defer { Self.stopPostfix(pf) }
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain pf.test>
                route [\(pfIP)]:2525
                max-smtp-out 3
                retry-after 1s
            </domain>
            """), threads: 1)
        let c = try d.client()
        let good = (0..<5).map { "r\($0)@pf.test" }
        #expect(try c.send(to: good, id: "pf-many") == nil)
        #expect(try c.send(to: ["unknown@pf.test"], id: "pf-unknown") == nil)
        #expect(try c.send(to: ["busy@pf.test"], id: "pf-busy") == nil)
        for i in 0..<4 { #expect(try c.send(to: ["s\(i)@pf.test"], id: "pf-single-\(i)") == nil) }
        c.quit()
        let everyGood = good + (0..<4).map { "s\($0)@pf.test" }
        let settled = E2E.waitUntil(120, every: 0.2) {
            let r = s.records
            return Set(r.of(.delivered).map(\.rcpt)).isSuperset(of: everyGood)
                && r.of(.bounced).contains { $0.rcpt == "unknown@pf.test" }
                && r.of(.transient).contains { $0.rcpt == "busy@pf.test" }
        }
        #expect(settled, "\(s.diagnostics)\nmaillog:\n\(Self.maillog(pf).suffix(3000))")
        let records = s.records
        // Delivered once each; every d record quotes a queue id Postfix logged.
        let delivered = records.of(.delivered)
        #expect(Dictionary(grouping: delivered, by: \.rcpt).values.allSatisfy { $0.count == 1 }, "\(delivered.map(\.rcpt))")
        let log = Self.maillog(pf)
        for r in delivered {
            let id = r.dsnDiag.range(of: "queued as ").map { String(r.dsnDiag[$0.upperBound...].prefix { $0.isLetter || $0.isNumber }) }
            #expect(id.map { !$0.isEmpty && log.contains("\($0): client=") } == true, "d record '\(r.dsnDiag)' names no queue id in Postfix's log")
        }
        // The 5xx: a bounce with both lines of Postfix's multi-line reply.
        let bounce = try #require(records.of(.bounced).first { $0.rcpt == "unknown@pf.test" })
        #expect(bounce.dsnStatus.hasPrefix("5.1.1") && bounce.dsnDiag.contains("no such user here")
                && bounce.dsnDiag.contains(footer), "\(bounce.dsnStatus) \(bounce.dsnDiag)")
        #expect(bounce.bounceCat == "bad-mailbox", "\(bounce.bounceCat)")
        // The 4xx: deferred (never bounced or delivered), multi-line text kept.
        let busy = records.filter { $0.rcpt == "busy@pf.test" }
        #expect(busy.allSatisfy { $0.type == .transient || $0.type == .received }, "\(busy.map(\.type))")
        #expect(busy.contains { $0.type == .transient && $0.dsnDiag.contains("mailbox busy") && $0.dsnDiag.contains(footer) },
                "\(busy.map(\.dsnDiag))")
        // Postfix's recipient limit: no transaction had more than 2 accepted
        // recipients (Postfix logs nrcpt per queued message).
        let nrcpt = log.split(separator: "\n").compactMap { line -> Int? in
            guard let r = line.range(of: "nrcpt=") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
        #expect(!nrcpt.isEmpty && nrcpt.allSatisfy { $0 <= 2 }, "nrcpt per queued message: \(nrcpt)")
        // Whatever Postfix refused at connect (its 421 for a second connection) was retried, never bounced.
        #expect(!records.of(.bounced).contains { $0.dsnDiag.contains("too many connections") })
    }

    /// `smtpd_tls_security_level = encrypt`: the daemon's STARTTLS delivery is
    /// taken (the `d` record names the TLS protocol), a plain-text one gets
    /// Postfix's 530 5.7.0 and is not delivered.
    @Test(arguments: BackendKind.testable)
    func postfixRequiringTLSTakesOnlyTheDaemonsSTARTTLSDeliveries(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let scenario = 184
        let s = try DaemonEndToEndTests.Scenario("postfix-encrypt", scenario, kind)
        let pfIP = E2E.ip(scenario, kind, host: 1)
        let cert = try TLSReloadSupport.makeCertificate(s.dir, "postfix", commonName: "postfix-peer.peregrine.test")
        // Postfix's smtpd reads them as the postfix user.
        chmod(cert.key, 0o644)
        let pf = try Self.startPostfix(s.dir, ip: pfIP, extra: "smtpd_tls_security_level = encrypt",
                                       environment: ["POSTFIX_TLS_CERT": cert.certificate, "POSTFIX_TLS_KEY": cert.key])
        defer { Self.stopPostfix(pf) }
        let d = try s.startDaemon(daemonConfig(s.dir, listen: s.listenIP, """
            <domain tls.pf.test>
                route [\(pfIP)]:2525
                use-starttls yes
            </domain>
            <domain plain.pf.test>
                route [\(pfIP)]:2525
                use-starttls no
                retry-after 1h
            </domain>
            """), threads: 1)
        let c = try d.client()
        #expect(try c.send(to: ["a@tls.pf.test"], id: "pf-tls") == nil)
        #expect(try c.send(to: ["b@plain.pf.test"], id: "pf-plain") == nil)
        c.quit()
        let settled = E2E.waitUntil(60, every: 0.2) {
            let r = s.records
            return r.of(.delivered).contains { $0.rcpt == "a@tls.pf.test" }
                && r.contains { ($0.type == .transient || $0.type == .bounced) && $0.rcpt == "b@plain.pf.test" }
        }
        #expect(settled, "\(s.diagnostics)\nmaillog:\n\(Self.maillog(pf).suffix(3000))")
        let records = s.records
        let tls = try #require(records.of(.delivered).first { $0.rcpt == "a@tls.pf.test" })
        #expect(tls.dlvTlsProtocol.hasPrefix("TLSv1."), "\(tls.dlvTlsProtocol)")
        #expect(!records.of(.delivered).contains { $0.rcpt == "b@plain.pf.test" })
        let refused = records.filter { $0.rcpt == "b@plain.pf.test" && ($0.type == .transient || $0.type == .bounced) }
        #expect(refused.contains { $0.dsnDiag.contains("5.7.0") && $0.dsnDiag.contains("STARTTLS") }, "\(refused.map(\.dsnDiag))")
    }
}
