#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineTestSupport
import PeregrineIO
import PeregrineAccounting

/// SMTP AUTH on injection end to end (issue 14), per backend, with the real
/// `peregrine run` and real peers: swaks and Python smtplib log in over
/// STARTTLS and relay; wrong passwords get 535; no login with require-auth
/// gets 530; AUTH is neither offered nor accepted in clear text; per-user
/// rights (`source {NAME}`); brute force is slowed, then locked out; and
/// Postfix's smtp client relays through Peregrine with SASL.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonSMTPAuthTests {
    static let backends = BackendKind.testable.map(\.rawValue)
    /// alice's password as `peregrine passwd` stores it (lowest accepted cost: the tests hash often).
    static let aliceHash: String = {
        let out = runTool(TLSDaemonProcess.executable, ["passwd", "--iterations", "100000"], stdin: "alice-pw\n", seconds: 60)
        return out.1.split(separator: "\n").first { $0.hasPrefix("password-hash ") }.map { String($0.dropFirst(14)) } ?? "unset"
    }()

    func certificates() throws -> E2ETLSCertificates.Files {
        try #require(E2ETLSCertificates.files, "openssl req could not make a throwaway certificate")
    }

    /// The daemon config: 127/8 must log in; alice relays anywhere, bob only
    /// to relay-domain local.test; everything goes to the capture receiver.
    func authConfig(_ certs: E2ETLSCertificates.Files, receiverPort: UInt16, accounting: String,
                    delay: String = "50ms", lockout: Int = 10) -> String {
        """
        smtp-server-tls-certificate \(certs.certificate)
        smtp-server-tls-key \(certs.key)
        smtp-auth-failure-delay \(delay)
        smtp-auth-lockout-failures \(lockout)
        smtp-auth-lockout-time 10m
        relay-domain local.test
        <acct-file \(accounting)>
            records r
        </acct-file>
        <source 127.0.0.0/8>
            require-auth yes
            always-allow-relaying no
        </source>
        <source {relayers}>
            always-allow-relaying yes
        </source>
        <source {senders}>
            always-allow-relaying no
            max-msg-rate 1/h
        </source>
        <smtp-user alice>
            password-hash \(Self.aliceHash)
            source {relayers}
        </smtp-user>
        <smtp-user bob>
            password bob-pw
            source {senders}
        </smtp-user>
        <domain *>
            route [127.0.0.1]:\(receiverPort)
        </domain>
        """
    }

    func rRecords(_ path: String) -> [[String: String]] {
        guard let data = FileManager.default.contents(atPath: path),
              let rows = try? PeregrineAccountingRows.parse(Array(data)) else { return [] }
        return rows
    }

    /// `peregrine passwd`: the hash it prints is what Python's hashlib computes
    /// (an independent PBKDF2); a trailing newline is not part of the password;
    /// bad input is refused with a message.
    @Test func passwdPrintsAHashThatHashlibVerifies() throws {
        let python = try #require(findTool("python3"), "python3 is not installed")
        let exe = TLSDaemonProcess.executable
        for input in ["pw with spaces\n", "pw with spaces"] {
            let (status, out) = runTool(exe, ["passwd", "--iterations", "120000"], stdin: input, seconds: 60)
            #expect(status == 0, "\(out)")
            let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("password-hash $pbkdf2-sha256$120000$") }, "\(out)")
            let check = """
                import hashlib, base64, sys
                _, scheme, n, salt, dk = sys.argv[1].split("$")
                pad = lambda x: x + "=" * (-len(x) % 4)
                ok = hashlib.pbkdf2_hmac("sha256", sys.argv[2].encode(), base64.b64decode(pad(salt)), int(n)) == base64.b64decode(pad(dk))
                print("match" if ok else "mismatch", len(base64.b64decode(pad(salt))))
                """
            let verify = runTool(python, ["-c", check, String(line.dropFirst("password-hash ".count)), "pw with spaces"], seconds: 60)
            #expect(verify.1.contains("match 16") && !verify.1.contains("mismatch"), "\(verify.1)")
        }
        let empty = runTool(exe, ["passwd"], stdin: "\n", seconds: 30)
        #expect(empty.0 == 1 && empty.1.contains("the password is empty"), "\(empty.1)")
        let weak = runTool(exe, ["passwd", "--iterations", "1000"], stdin: "x", seconds: 30)
        #expect(weak.0 == 2 && weak.1.contains("--iterations needs a number from 100000 to 100000000"), "\(weak.1)")
    }

    @Test(arguments: backends)
    func swaksAndSmtplibLogInOverSTARTTLSAndRelay(backend: String) throws {
        let certs = try certificates()
        let python = try #require(findTool("python3"), "python3 is not installed")
        let swaks = try #require(findTool("swaks"), "swaks is not installed (scripts/setup installs it)")
        try #require(Self.aliceHash.hasPrefix("$pbkdf2-sha256$100000$"), "peregrine passwd failed: \(Self.aliceHash)")
        let receiver = try CaptureReceiver()
        defer { receiver.stop() }
        let accounting = receiver.directory + "/../" + "r-\(getpid())-\(backend).csv"
        defer { try? FileManager.default.removeItem(atPath: accounting) }
        let daemon = try TLSDaemonProcess(backend: backend, config: authConfig(certs, receiverPort: receiver.port,
                                                                                accounting: accounting))
        defer { daemon.terminate() }
        let server = "127.0.0.1:\(daemon.port)"

        // swaks: STARTTLS then AUTH PLAIN and AUTH LOGIN as alice, relayed.
        for mech in ["PLAIN", "LOGIN"] {
            let r = runTool(swaks, ["--server", server, "--tls", "--auth", mech, "--auth-user", "alice",
                                    "--auth-password", "alice-pw", "--from", "s@client.test", "--to", "swaks-\(mech)@auth.test",
                                    "--helo", "swaks.test", "--header", "Subject: swaks \(mech)"], seconds: 60)
            #expect(r.0 == 0, "\(r.1)")
            #expect(r.1.contains("235 2.7.0"), "\(r.1)")
        }
        // swaks, wrong password: 535 5.7.8 and a failure exit.
        let wrong = runTool(swaks, ["--server", server, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                                    "--auth-password", "nope", "--from", "s@client.test", "--to", "x@auth.test"], seconds: 60)
        #expect(wrong.0 != 0 && wrong.1.contains("535 5.7.8 Authentication credentials invalid"), "\(wrong.1)")

        // smtplib: clear text, no login, alice, bob (per-user rights), wrong password.
        let (status, out) = runTool(python, ["-c", e2eAuthSmtplibScript, String(daemon.port), "plaintext", "noauth",
                                             "login:alice:alice-pw:py1@auth.test,py2@local.test",
                                             "login:bob:bob-pw:bob1@auth.test,bob2@local.test",
                                             "login:bob:alice-pw:bob3@local.test",
                                             "login:bob:bob-pw:bob4@local.test"], seconds: 120)
        #expect(status == 0, "\(out)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.contains("plaintext hidden not-supported 538 5.7.11 Encryption required for requested authentication mechanism"), "\(out)")
        #expect(lines.contains("noauth 530 5.7.0 Authentication required"), "\(out)")
        #expect(lines.contains("login 235"), "\(out)")
        #expect(lines.contains("refused none"), "\(out)")                      // alice: both
        #expect(lines.contains("refused bob1@auth.test=550"), "\(out)")        // bob: only local.test
        #expect(lines.contains("login 535 5.7.8 Authentication credentials invalid"), "\(out)")
        // bob's source allows one message an hour: his second MAIL is deferred.
        #expect(lines.contains("mailrefused 451 4.7.1 message rate limit exceeded (max-msg-rate 1/1h), try again later"), "\(out)")

        // What arrived: swaks' two, alice's two, bob's local one; every one says who logged in how.
        #expect(e2eEventually(60) { receiver.messages.count == 5 }, "\(receiver.messages.count) captured")
        let received = receiver.messages
        #expect(received.allSatisfy { $0.contains("(Peregrine) with ESMTPSA") }, "\(received.map { $0.prefix(300) })")
        #expect(!received.contains { $0.contains("bob1@auth.test") })

        // r records name the login (rcvSmtpUser).
        #expect(e2eEventually { rRecords(accounting).count == 5 }, "\(rRecords(accounting))")
        let byRcpt = Dictionary(rRecords(accounting).map { ($0["rcpt"] ?? "", $0["rcvSmtpUser"] ?? "-") }, uniquingKeysWith: { a, _ in a })
        #expect(byRcpt["swaks-PLAIN@auth.test"] == "alice" && byRcpt["py2@local.test"] == "alice", "\(byRcpt)")
        #expect(byRcpt["bob2@local.test"] == "bob", "\(byRcpt)")
    }

    @Test(arguments: backends)
    func bruteForceIsSlowedThenLockedOut(backend: String) throws {
        let certs = try certificates()
        let python = try #require(findTool("python3"), "python3 is not installed")
        let receiver = try CaptureReceiver()
        defer { receiver.stop() }
        // The first failure waits 10 s: long enough for another client's whole session meanwhile.
        let daemon = try TLSDaemonProcess(backend: backend, config: authConfig(certs, receiverPort: receiver.port,
                                                                                accounting: receiver.directory + "/r.csv",
                                                                                delay: "10s", lockout: 2))
        defer { daemon.terminate() }
        let other = PrivateLoopback.address(214, (BackendKind.allCases.map(\.rawValue).firstIndex(of: backend) ?? 0) + 1)
        let (status, out) = runTool(python, ["-c", e2eBruteForceScript, String(daemon.port), other], seconds: 240)
        #expect(status == 0, "\(out)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.contains("B login 235") && lines.contains("B sent"), "\(out)")
        #expect(lines.contains("A still-waiting"), "\(out)")
        #expect(lines.contains("A 535 5.7.8 Authentication credentials invalid"), "\(out)")
        let lockedOut = "454 4.7.0 Too many failed authentication attempts from this address, try again later"
        #expect(lines.contains("C \(lockedOut)") && lines.contains("C closed"), "\(out)")
        #expect(lines.contains("D \(lockedOut)"), "\(out)")
        #expect(lines.contains("E 235"), "\(out)")
        #expect(e2eEventually(60) { receiver.messages.count == 1 })
    }

    /// Postfix's smtp client (SASL PLAIN/LOGIN through Cyrus, libsasl2-modules)
    /// relays through Peregrine over STARTTLS as alice.
    @Test(arguments: backends)
    func postfixRelaysThroughPeregrineWithSASL(backend: String) throws {
        _ = try #require(findTool("postfix"), "postfix is not installed (scripts/setup installs it)")
        let swaks = try #require(findTool("swaks"), "swaks is not installed")
        try #require(getuid() == 0, "a private Postfix instance needs root")
        let certs = try certificates()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/postfix-instance").path
        let receiver = try CaptureReceiver()
        defer { receiver.stop() }
        let accounting = receiver.directory + "/../" + "r-postfix-\(getpid())-\(backend).csv"
        defer { try? FileManager.default.removeItem(atPath: accounting) }
        let daemon = try TLSDaemonProcess(backend: backend, config: authConfig(certs, receiverPort: receiver.port,
                                                                                accounting: accounting))
        defer { daemon.terminate() }

        let index = (BackendKind.allCases.map(\.rawValue).firstIndex(of: backend) ?? 0) + 1
        let dir = certs.directory + "/postfix-auth-\(backend)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: certs.directory)
        let ip = PrivateLoopback.address(214, 10 + index), port: UInt16 = 2525
        let (status, out) = runTool("/bin/bash", [script, "start", dir, "\(ip):\(port)", "127.0.0.1:\(daemon.port)"],
                                    environment: ["POSTFIX_SASL_USER": "alice", "POSTFIX_SASL_PASSWORD": "alice-pw"],
                                    seconds: 60)
        defer {
            _ = runTool("/bin/bash", [script, "stop", dir], seconds: 60)
            try? FileManager.default.removeItem(atPath: dir)
        }
        try #require(status == 0, "\(out)")
        try #require(PrivateLoopback.waitForListener(ip, port, seconds: 30), "Postfix smtpd is not listening on \(ip):\(port)")
        let sent = runTool(swaks, ["--server", "\(ip):\(port)", "--from", "s@client.test", "--to", "via-postfix@auth.test",
                                   "--header", "Subject: through postfix"], seconds: 60)
        #expect(sent.0 == 0, "\(sent.1)")
        let arrived = e2eEventually(90) { receiver.messages.contains { $0.contains("Subject: through postfix") } }
        let log = (try? String(contentsOfFile: dir + "/maillog", encoding: .utf8)) ?? ""
        #expect(arrived, "Postfix did not relay through Peregrine: \(log.suffix(3000))")
        #expect(receiver.messages.first { $0.contains("Subject: through postfix") }?.contains("with ESMTPSA") == true)
        #expect(e2eEventually { rRecords(accounting).contains { $0["rcpt"] == "via-postfix@auth.test" && $0["rcvSmtpUser"] == "alice" } },
                "\(rRecords(accounting)) \(log.suffix(2000))")
    }
}

/// Accounting rows as name → value (the reader from PeregrineAccounting).
enum PeregrineAccountingRows {
    static func parse(_ bytes: [UInt8]) throws -> [[String: String]] {
        try AccountingCSVReader.parse(bytes).map { row in
            var out: [String: String] = [:]
            for (i, name) in row.header.enumerated() where i < row.fields.count { out[name] = row.fields[i] }
            return out
        }
    }
}
