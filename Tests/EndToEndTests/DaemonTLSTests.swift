#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// STARTTLS end to end with the real executables on loopback, per backend:
/// injection over STARTTLS (openssl s_client, smtplib) and implicit TLS,
/// delivery over STARTTLS to the sink (accounting `d` records name the
/// protocol and cipher), Gmail's require-tls, and a sink whose TLS is broken
/// or refused: opportunistic falls back to plain, required defers with the
/// diagnostic in the `t` record.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DaemonTLSTests {
    static let backends = BackendKind.testable.map(\.rawValue)

    func certificates() throws -> E2ETLSCertificates.Files {
        try #require(E2ETLSCertificates.files, "openssl req could not make a throwaway certificate")
    }

    func sinkProfile(_ text: String) throws -> String {
        let path = try certificates().directory + "/profile-\(UInt32.random(in: 0...UInt32.max)).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// One counter of one provider from the sink's /stats. Throws when the stats
    /// cannot be read or lack the counter: a missing reading never passes as 0.
    func stat(_ sink: SinkProcess, _ provider: String, _ key: String) throws -> UInt64 {
        let p = try sink.providerStats(provider)
        guard let value = p[key] as? NSNumber else {
            throw SinkTestError("sink /stats has no \(key) for provider \(provider): \(p)")
        }
        return value.uint64Value
    }

    @Test(arguments: backends)
    func injectionOverTLSRelaysOverTLS(backend: String) throws {
        let certs = try certificates()
        let python = try #require(findTool("python3"), "python3 not installed")
        let openssl = try #require(findTool("openssl"), "openssl not installed")
        let profile = try sinkProfile("""
            <isp tlsmx>
                domains tls.test
                mx 127.0.0.1
                scripted-replies no
            </isp>
            """)
        let sink = try SinkProcess(["--profile", profile, "--port", "0", "--stats-port", "127.0.0.1:0",
                                    "--tls-cert", certs.certificate, "--tls-key", certs.key, "--backend", "epoll"])
        defer { sink.terminate() }
        let mx = try sink.address("tlsmx")
        let daemon = try TLSDaemonProcess(backend: backend, listeners: ["127.0.0.1:0", "127.0.0.1:0 tls=yes"], config: """
            smtp-server-tls-certificate \(certs.certificate)
            smtp-server-tls-key \(certs.key)
            <source 127.0.0.0/8>
                always-allow-relaying yes
            </source>
            <domain tls.test>
                route [\(mx.ip)]:\(mx.port)
            </domain>
            """)
        defer { daemon.terminate() }
        try #require(daemon.listeners.count == 2)

        // smtplib: STARTTLS (advertised, EHLO state reset), then implicit TLS on the tls=yes listener.
        var (status, out) = runTool(python, ["-c", e2eSmtplibScript, String(daemon.port), "starttls", "a@tls.test", "b@tls.test"])
        #expect(status == 0 && out.contains("SENT 2"), "\(out)")
        (status, out) = runTool(python, ["-c", e2eSmtplibScript, String(daemon.listeners[1].port), "implicit", "c@tls.test"])
        #expect(status == 0 && out.contains("SENT 1"), "\(out)")
        // openssl s_client -starttls smtp, a whole transaction through it.
        (status, out) = runTool(openssl, ["s_client", "-starttls", "smtp", "-connect", "127.0.0.1:\(daemon.port)", "-crlf",
                                             "-ign_eof", "-quiet"],
                                   stdin: "EHLO sclient.test\nMAIL FROM:<s@client.test>\nRCPT TO:<d@tls.test>\nDATA\n"
                                       + "Subject: via s_client\n\nhello\n.\nQUIT\n", seconds: 30)
        #expect(out.contains("250 2.0.0 OK id="), "\(out)")
        #expect(out.contains("221"), "\(out)")

        #expect(e2eEventually { daemon.records("d").count == 4 }, "\(daemon.records().map(\.fields))")
        for r in daemon.records("d") {
            #expect(r["dlvTlsProtocol"] == "TLSv1.3", "\(r.fields)")
            #expect(!(r["dlvTlsCipher"] ?? "").isEmpty, "\(r.fields)")
        }
        #expect(try stat(sink, "tlsmx", "sessions_tls") >= 1)
        #expect(try stat(sink, "tlsmx", "messages_accepted") == 4)
    }

    @Test(arguments: backends)
    func gmailRequireTLSGetsEverythingOverTLS(backend: String) throws {
        let certs = try certificates()
        let python = try #require(findTool("python3"), "python3 not installed")
        // The shipped gmail profile's reply for senders without TLS, its connection and per-connection limits.
        let profile = try sinkProfile("""
            <isp gmail>
                domains gmail.com googlemail.com
                mx 127.0.0.1
                hostname mx.gmail.sink
                reply-suffix gsmtp
                max-connections 5 greeting "421-4.7.0 Try again later, closing connection."
                max-msg-per-connection 50 mail "421-4.7.0 Try again later, closing connection."
                require-tls
                scripted-replies no
            </isp>
            """)
        let sink = try SinkProcess(["--profile", profile, "--port", "0", "--stats-port", "127.0.0.1:0",
                                    "--tls-cert", certs.certificate, "--tls-key", certs.key, "--backend", "epoll"])
        defer { sink.terminate() }
        let mx = try sink.address("gmail")
        let daemon = try TLSDaemonProcess(backend: backend, config: """
            <source 127.0.0.0/8>
                always-allow-relaying yes
            </source>
            <domain gmail.com>
                route [\(mx.ip)]:\(mx.port)
                max-smtp-out 5
                max-msg-per-connection 50
            </domain>
            <domain googlemail.com>
                route [\(mx.ip)]:\(mx.port)
                use-starttls no
            </domain>
            """)
        defer { daemon.terminate() }
        let gmail = (0..<60).map { "user\($0)@gmail.com" }
        let (status, out) = runTool(python, ["-c", e2eSmtplibScript, String(daemon.port), "plain"] + gmail + ["plain@googlemail.com"],
                                       seconds: 120)
        #expect(status == 0 && out.contains("SENT 61"), "\(out)")
        #expect(e2eEventually(60) { daemon.records("d").count == 60 && daemon.records("t").count == 1 },
                "d=\(daemon.records("d").count) t=\(daemon.records("t").map(\.fields))")
        for r in daemon.records("d") {
            #expect(r["rcpt"]?.hasSuffix("@gmail.com") == true)
            #expect(r["dlvTlsProtocol"] == "TLSv1.3" || r["dlvTlsProtocol"] == "TLSv1.2", "\(r.fields)")
        }
        // The queue with use-starttls no meets Gmail's answer to plain text.
        let t = try #require(daemon.records("t").first)
        #expect(t["rcpt"] == "plain@googlemail.com")
        #expect(t["dsnDiag"]?.contains("4.7.29") == true, "\(t.fields)")
        #expect(t["dsnDiag"]?.contains("not using a TLS connection") == true, "\(t.fields)")
        #expect(try stat(sink, "gmail", "messages_accepted") == 60)
    }

    @Test(arguments: backends)
    func brokenTLSFallsBackWhenOpportunisticAndDefersWhenRequired(backend: String) throws {
        let certs = try certificates()
        let python = try #require(findTool("python3"), "python3 not installed")
        let profile = try sinkProfile("""
            <isp broken>
                domains broken.test brokenreq.test
                mx 127.0.0.1
                starttls break
                scripted-replies no
            </isp>
            <isp refusing>
                domains refused.test
                mx 127.0.0.1
                starttls refuse
                scripted-replies no
            </isp>
            """)
        let sink = try SinkProcess(["--profile", profile, "--port", "0", "--stats-port", "127.0.0.1:0",
                                    "--tls-cert", certs.certificate, "--tls-key", certs.key, "--backend", "epoll"])
        defer { sink.terminate() }
        let broken = try sink.address("broken"), refusing = try sink.address("refusing")
        let daemon = try TLSDaemonProcess(backend: backend, config: """
            <source 127.0.0.0/8>
                always-allow-relaying yes
            </source>
            <domain broken.test>
                route [\(broken.ip)]:\(broken.port)
                use-starttls yes
            </domain>
            <domain brokenreq.test>
                route [\(broken.ip)]:\(broken.port)
                require-starttls yes
            </domain>
            <domain refused.test>
                route [\(refusing.ip)]:\(refusing.port)
                require-starttls yes
            </domain>
            """)
        defer { daemon.terminate() }
        // One message to both brokenreq.test recipients: one item, deferred as a whole.
        let rcpts = ["a@broken.test", "b@broken.test", "c@broken.test", "a@brokenreq.test,b@brokenreq.test", "a@refused.test"]
        let (status, out) = runTool(python, ["-c", e2eSmtplibScript, String(daemon.port), "plain"] + rcpts)
        #expect(status == 0 && out.contains("SENT 5"), "\(out)")
        #expect(e2eEventually { daemon.records("d").count == 3 && daemon.records("t").count == 3 },
                "\(daemon.records().map(\.fields))")
        // Opportunistic: the handshake failed once, the MX is remembered, the mail went in plain text.
        for r in daemon.records("d") {
            #expect(r["rcpt"]?.hasSuffix("@broken.test") == true, "\(r.fields)")
            #expect(r["dlvTlsProtocol"] == "", "\(r.fields)")
        }
        #expect(try stat(sink, "broken", "tls_handshake_failures") >= 1)
        // Required: deferred, never sent in plain text, with the reason.
        for r in daemon.records("t") {
            let diag = r["dsnDiag"] ?? ""
            #expect(diag.contains("451 4.7.10 TLS required but not available from 127.0.0.1"), "\(r.fields)")
            if r["rcpt"]?.hasSuffix("@refused.test") == true {
                #expect(diag.contains("STARTTLS refused: 454"), "\(diag)")
            } else {
                #expect(r["rcpt"]?.hasSuffix("@brokenreq.test") == true, "\(r.fields)")
                #expect(diag.contains("handshake") || diag.contains("TLS"), "\(diag)")
            }
        }
        #expect(try stat(sink, "broken", "messages_accepted") == 3)
        #expect(try stat(sink, "refusing", "messages_accepted") == 0)
    }
}
