#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
@testable import PeregrineSink

/// The real `peregrine-sink` driven over loopback by a scripted SMTP client,
/// one shipped profile after another: each provider's reply arrives at the
/// phase DOMAIN.md says, with the provider's text.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkEndToEndTests {
    static let providers = ["gmail", "yahoo", "outlook", "icloud", "comcast", "gmx", "orange"]

    /// The shipped profiles without their random failures and drops, so that
    /// a scripted run is deterministic (everything else is as shipped).
    static let deterministicProfiles: String = {
        let dir = NSTemporaryDirectory() + "sink-profiles-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = SinkProfileTests.profilesDir
        for name in (try? FileManager.default.contentsOfDirectory(atPath: source)) ?? [] where name.hasSuffix(".conf") {
            let text = (try? String(contentsOfFile: source + "/" + name, encoding: .utf8)) ?? ""
            let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter {
                let t = $0.trimmingCharacters(in: .whitespaces)
                return !t.hasPrefix("random-failure") && !t.hasPrefix("drop-during-data")
            }
            try? kept.joined(separator: "\n").write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
        }
        return dir
    }()

    static let shipped: [String: SinkISPProfile] = {
        let set = try? SinkProfileParser.load(path: SinkProfileTests.profilesDir + "/all.conf")
        var out: [String: SinkISPProfile] = [:]
        for p in set?.profiles ?? [] { out[p.name] = p }
        return out
    }()

    func profile(_ name: String) throws -> SinkISPProfile {
        try #require(Self.shipped[name])
    }

    /// Plain text (`--no-require-tls`): the scripted client speaks no TLS; Gmail's require-tls has its own tests.
    func sink(_ name: String, _ extra: [String] = []) throws -> SinkProcess {
        try SinkProcess(["--profile", Self.deterministicProfiles + "/\(name).conf", "--port", "0", "--no-require-tls",
                         "--backend", Self.backend.rawValue] + extra)
    }

    /// The backend the scenario tests run on: io_uring when this kernel has it.
    static let backend: BackendKind = {
        for kind in [BackendKind.ioUring, .epoll, .dispatch] where (try? kind.loopType.init()) != nil { return kind }
        return .dispatch
    }()

    /// The reply is the template's: same code, enhanced code and text up to the first placeholder.
    func expect(_ reply: WireReply?, is t: SinkReplyTemplate, _ what: String,
                sourceLocation: SourceLocation = #_sourceLocation) {
        guard let reply else {
            Issue.record("\(what): connection closed, expected \(t.code)", sourceLocation: sourceLocation)
            return
        }
        #expect(reply.code == t.code, "\(what): \(reply)", sourceLocation: sourceLocation)
        // Every line without its code and enhanced code: a Gmail-style reply is
        // one text folded over several lines, the enhanced code on each.
        var texts: [String] = []
        for line in reply.lines {
            var body = line.count > 4 ? String(line.dropFirst(4)) : ""
            if let e = t.enhanced {
                #expect(body.hasPrefix(e + " "), "\(what): enhanced code \(e) missing in \(reply)", sourceLocation: sourceLocation)
                body = String(body.dropFirst(e.count + 1))
            }
            texts.append(body)
        }
        let body = texts.joined(separator: " ")
        let fixed = String(t.lines[0].prefix { $0 != "{" })
        #expect(body.hasPrefix(fixed), "\(what): expected text \"\(fixed)…\", got \(reply)", sourceLocation: sourceLocation)
        if t.continued {
            // Gmail's suffix ends the last line: "<session-id> - gsmtp" [G1].
            #expect(reply.lines.last?.hasSuffix(" - gsmtp") == true, "\(what): \(reply)", sourceLocation: sourceLocation)
        }
    }

    // MARK: Connection limit at the greeting

    @Test(arguments: SinkEndToEndTests.providers)
    func connectionBeyondTheLimitIsRefusedAtTheGreeting(_ name: String) throws {
        let p = try profile(name)
        let limit = try #require(p.maxConnections)
        // Gmail answers it at EHLO [G5]; the others at the greeting.
        #expect(limit.phase == (name == "gmail" ? .helo : .greeting))
        let sink = try sink(name)
        defer { sink.terminate() }
        let (ip, port) = try sink.address(name)
        var open: [SinkTestClient] = []
        for i in 0..<limit.value {
            let c = try SinkTestClient(ip, port)
            let g = try c.reply()
            #expect(g?.code == 220, "connection \(i + 1) of \(limit.value): \(String(describing: g))")
            open.append(c)
        }
        let extra = try SinkTestClient(ip, port)
        if limit.phase == .helo {
            #expect(try extra.reply()?.code == 220)
            expect(try extra.command("EHLO client.test"), is: limit.reply, "\(name) connection \(limit.value + 1) at EHLO")
        } else {
            expect(try extra.reply(), is: limit.reply, "\(name) connection \(limit.value + 1)")
        }
        #expect(try extra.reply() == nil, "the refused connection is closed")
        // Once one closes, a new connection is greeted again (the sink saw the close).
        open.removeFirst()
        var greeted = false
        for _ in 0..<100 where !greeted {
            let again = try SinkTestClient(ip, port)
            greeted = try again.reply()?.code == 220
            if !greeted { usleep(50_000) }
        }
        #expect(greeted)
        withExtendedLifetime(open) {}
    }

    // MARK: Messages per connection

    @Test(arguments: SinkEndToEndTests.providers)
    func messageAfterThePerConnectionCapIsRefused(_ name: String) throws {
        let p = try profile(name)
        let cap = try #require(p.maxMessagesPerConnection)
        // Rates × 100000 so only the per-connection cap can trip.
        let sink = try sink(name, ["--time-scale", "0.00001"])
        defer { sink.terminate() }
        let (ip, port) = try sink.address(name)
        let c = try SinkTestClient(ip, port)
        #expect(try c.start()?.code == 220)
        let rcpt = "someone@\(p.domains[0])"
        for i in 0..<cap.value {
            let failure = try c.sendMessage(to: rcpt)
            #expect(failure == nil, "message \(i + 1) of \(cap.value): \(String(describing: failure))")
            if failure != nil { return }
        }
        let refused = try c.sendMessage(to: rcpt)
        #expect(refused?.0 == cap.phase.rawValue, "\(name): refused at \(String(describing: refused?.0))")
        if cap.reply.silent {
            // Yahoo closes without a code [Y1]: no reply at all, then EOF.
            #expect(refused?.1 == nil, "\(name): expected a close without a reply, got \(String(describing: refused?.1))")
        } else {
            expect(refused?.1, is: cap.reply, "\(name) message \(cap.value + 1)")
        }
        if cap.reply.code == 421 { #expect(c.isClosedByPeer()) }
        // A new connection may send again.
        let c2 = try SinkTestClient(ip, port)
        #expect(try c2.start()?.code == 220)
        #expect(try c2.sendMessage(to: rcpt) == nil)
    }

    // MARK: Rate, penalty box

    /// The rate limit is tripped by count, not by speed: pipelined writes carry
    /// ten times the burst of MAIL/RSET pairs (MAIL/RCPT/RSET where the rate
    /// counts recipients; whole messages, one connection per per-connection cap,
    /// where it counts at the end of DATA), which the sink reads back to back,
    /// so it overflows however slow this machine is (a refill can at worst delay
    /// the trip). The in-box reply is the very next refusal (same write, or the
    /// next connection for a 421 that closes it). Time is scaled so that the
    /// box lasts 10 minutes, longer than the test may run, and the test lifts
    /// it (POST /penalty-box/lift) once it has met it: with a box of 3 s, a
    /// loaded machine reached step 2 after the box had lifted. The box ending
    /// by itself at its scaled length is SinkPolicyTests.timeScaleShrinksEveryConstant's.
    @Test(arguments: SinkEndToEndTests.providers)
    func rateOverflowIsDeferredThenThePenaltyBoxLifts(_ name: String) throws {
        let p = try profile(name)
        let rate = try #require(p.messageRate)
        let box = try #require(p.penaltyBox)
        #expect(rate.penalty)
        let scale = 600 / box.seconds
        let sink = try sink(name, ["--time-scale", String(scale), "--stats-port", "127.0.0.1:0"])
        defer { sink.terminate() }
        let (ip, port) = try sink.address(name)
        let rcpt = "someone@\(p.domains[0])"

        // 1. Overflow. A rate counted at MAIL or RCPT is met by MAIL(/RCPT)/RSET
        // units, which deliver nothing; one counted at the end of DATA (Gmail)
        // needs whole messages, so those go in writes of at most the
        // per-connection cap, one connection each.
        let unit: [(command: String, phase: String)]
        switch rate.phase {
        case .rcpt:
            unit = [("MAIL FROM:<sender@example.com>", "mail"), ("RCPT TO:<\(rcpt)>", "rcpt"), ("RSET", "rset")]
        case .data:
            unit = [("MAIL FROM:<sender@example.com>", "mail"), ("RCPT TO:<\(rcpt)>", "rcpt"), ("DATA", "data-command"),
                    ("Subject: rate\r\n\r\nHello.\r\n.", "data")]
        default:
            unit = [("MAIL FROM:<sender@example.com>", "mail"), ("RSET", "rset")]
        }
        let units = rate.rate.burst * 10 + 100
        let perConnection = rate.phase == .data ? max(1, p.maxMessagesPerConnection?.value ?? units) : units
        var refusals: [(phase: String, reply: WireReply)] = []
        var passed = 0, sentUnits = 0
        writes: while sentUnits < units {
            let c = try SinkTestClient(ip, port)
            #expect(try c.start()?.code == 220)
            let n = min(perConnection, units - sentUnits)
            sentUnits += n
            // A 421 closes the connection while the rest of the write is unread: the
            // send may then fail, and the replies already sent are still read below.
            try? c.send(String(repeating: unit.map { $0.command + "\r\n" }.joined(), count: n))
            for i in 0..<(n * unit.count) {
                guard let r = try c.reply() else { break }
                let phase = unit[i % unit.count].phase
                // 503 answers a command after a refused one; RSET is always 250.
                guard r.code >= 400, r.code != 503 else {
                    if phase == rate.phase.rawValue { passed += 1 }
                    continue
                }
                refusals.append((phase, r))
                if refusals.count == 2 || r.code == 421 { break writes }
            }
            if !refusals.isEmpty { break }
            _ = try? c.command("QUIT")
        }
        let first = try #require(refusals.first, "\(name): no rate refusal after \(passed) of \(units) \(rate.phase) commands")
        #expect(passed >= rate.rate.burst, "\(name): refused after \(passed) commands, burst \(rate.rate.burst)")
        #expect(first.phase == rate.phase.rawValue, "\(name): rate answered at \(first.phase)")
        expect(first.reply, is: rate.reply, "\(name) rate overflow after \(passed) commands")

        // 2. In the box: the next refusal is the box's, at the box's phase.
        var inBox: (phase: String, reply: WireReply?)
        if refusals.count > 1 {
            inBox = (refusals[1].phase, refusals[1].reply)
        } else {
            let c2 = try SinkTestClient(ip, port)
            let g = try c2.reply()
            if let g, g.code != 220 {
                inBox = ("greeting", g)
            } else {
                _ = try c2.command("EHLO client.test")
                inBox = try #require(try c2.sendMessage(to: rcpt), "\(name): accepted right after the rate tripped")
            }
        }
        #expect(inBox.phase == box.phase.rawValue, "\(name): box answered at \(inBox.phase)")
        expect(inBox.reply, is: box.reply, "\(name) penalty box")

        // 3. The box holds until it is lifted, then a message is accepted. The
        // rate's bucket, emptied in step 1, refills at the scaled rate (at most
        // one message per 1.33 s here), so a retry before its next token meets
        // the rate again, which boxes the sender again: each retry lifts first.
        #expect(try sink.liftPenaltyBoxes() >= 1, "\(name): the box was off before it was lifted")
        let deadline = Date().addingTimeInterval(60)
        var accepted = false, retries = 0
        var lastRefusal = ""
        while !accepted && Date() < deadline {
            if retries > 0 {
                usleep(100_000)
                try sink.liftPenaltyBoxes()
            }
            retries += 1
            let c3 = try SinkTestClient(ip, port)
            guard let g = try c3.reply(), g.code == 220 else { continue }
            _ = try c3.command("EHLO client.test")
            let refused = try c3.sendMessage(to: rcpt)
            accepted = refused == nil
            if let refused { lastRefusal = "\(refused.0): \(refused.1.map { "\($0)" } ?? "closed")" }
        }
        #expect(accepted, "\(name): still refused 60 s after the box was lifted (\(retries) tries; last \(lastRefusal))")
    }

    // MARK: Recipients

    @Test(arguments: SinkEndToEndTests.providers)
    func recipientRulesAnswerAtRcpt(_ name: String) throws {
        let p = try profile(name)
        #expect(p.recipientRules.contains { $0.kind == .unknownUser })
        let sink = try sink(name, ["--time-scale", "0.00001"])
        defer { sink.terminate() }
        let (ip, port) = try sink.address(name)
        let c = try SinkTestClient(ip, port)
        #expect(try c.start()?.code == 220)
        #expect(try c.command("MAIL FROM:<s@example.com>")?.code == 250)
        for rule in p.recipientRules {
            let pattern = rule.patterns[0].text.replacingOccurrences(of: "*", with: "-7").replacingOccurrences(of: "?", with: "x")
            let rcpt = "\(pattern)@\(p.domains[0])"
            if rule.phase == .data {
                // Accepted at RCPT, the whole message refused at the end of DATA.
                _ = try c.command("RSET")
                let refused = try c.sendMessage(to: rcpt)
                #expect(refused?.0 == "data", "\(name) \(rule.kind.rawValue): \(String(describing: refused))")
                expect(refused?.1, is: rule.reply, "\(name) \(rule.kind.rawValue) at end of DATA")
                #expect(try c.command("MAIL FROM:<s@example.com>")?.code == 250)
            } else {
                expect(try c.command("RCPT TO:<\(rcpt)>"), is: rule.reply, "\(name) \(rule.kind.rawValue)")
            }
        }
        // Scripted local parts.
        let scripted = try c.command("RCPT TO:<450-anything@\(p.domains[0])>")
        #expect(scripted?.code == 450 && scripted?.lines[0].hasPrefix("450 4.0.0") == true, "\(String(describing: scripted))")
        #expect(try c.command("RCPT TO:<552-full@\(p.domains.last ?? "x")>")?.code == 552)
        // An ordinary recipient is accepted.
        #expect(try c.command("RCPT TO:<jane.doe@\(p.domains[0])>")?.code == 250)
    }

    @Test(arguments: SinkEndToEndTests.providers)
    func greylistingPassesOnTheRetry(_ name: String) throws {
        let p = try profile(name)
        let grey = try #require(p.greylist)
        let scale = 0.3 / grey.seconds   // the delay becomes 0.3 s
        let sink = try sink(name, ["--time-scale", String(scale)])
        defer { sink.terminate() }
        let (ip, port) = try sink.address(name)
        let c = try SinkTestClient(ip, port)
        #expect(try c.start()?.code == 220)
        let rcpt = "grey-1@\(p.domains[0])"
        #expect(try c.command("MAIL FROM:<s@example.com>")?.code == 250)
        expect(try c.command("RCPT TO:<\(rcpt)>"), is: grey.reply, "\(name) first try")
        _ = try c.command("RSET")
        var passed = false
        for _ in 0..<100 where !passed {
            usleep(100_000)
            if let f = try c.sendMessage(to: rcpt) {
                #expect(f.1?.code == grey.reply.code, "\(name) retry: \(String(describing: f))")
            } else {
                passed = true
            }
        }
        #expect(passed)
    }

    @Test func idleConnectionsAreClosedWith421() throws {
        let profile = NSTemporaryDirectory() + "sink-idle-\(getpid()).conf"
        // 3 s is a deadline, not a threshold: a transaction's commands are
        // never 3 s apart unless the machine stalls (at 300 ms, a loaded
        // machine timed the busy connection out mid-transaction).
        try "<isp idle>\n  domains idle.test\n  mx 127.0.8.9\n  idle-timeout 3s\n</isp>\n"
            .write(toFile: profile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let sink = try SinkProcess(["--profile", profile, "--port", "0", "--backend", Self.backend.rawValue])
        let (ip, port) = try sink.address("idle")
        let c = try SinkTestClient(ip, port)
        #expect(try c.start()?.code == 220)
        // A busy connection is not idle.
        #expect(try c.sendMessage(to: "a@idle.test") == nil)
        let r = try c.reply()   // nothing sent: the sink times us out
        #expect(r?.code == 421 && r?.lines[0].hasPrefix("421 4.4.2") == true, "\(String(describing: r))")
        #expect(c.isClosedByPeer())
        let out = sink.terminate()
        #expect(out.contains("\"sessions_timed_out\" : 1"))
    }

    // MARK: DNS

    static func dnsQuery(port: UInt16, name: String, type: UInt16) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var q: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") { q.append(UInt8(label.utf8.count)); q += label.utf8 }
        q += [0, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        for _ in 0..<3 {
            _ = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, q, q.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            var buf = [UInt8](repeating: 0, count: 1500)
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { return Array(buf[0..<n]) }
        }
        throw SinkTestError("no DNS answer for \(name)")
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }

    @Test func dnsAnswersMXAndAForEveryProfileDomain() throws {
        let sink = try SinkProcess(["--profile", Self.deterministicProfiles + "/all.conf", "--port", "0", "--no-require-tls",
                                    "--dns", "127.0.0.1:0", "--backend", Self.backend.rawValue])
        defer { sink.terminate() }
        let port = try #require(sink.dnsPort)
        for (name, p) in Self.shipped where name != "accept-all" {
            for domain in p.domains {
                let r = try Self.dnsQuery(port: port, name: domain, type: 15)
                #expect(r[0] == 0x12 && r[1] == 0x34 && r[2] & 0x80 != 0, "\(domain): not a response")
                #expect(r[3] & 0x0f == 0, "\(domain): rcode \(r[3] & 0x0f)")
                #expect(Int(r[6]) << 8 | Int(r[7]) == p.mx.count, "\(domain): answer count")
                #expect(Self.contains(r, [3] + Array("mx1".utf8) + [UInt8(name.utf8.count)] + Array(name.utf8) + [4] + Array("sink".utf8)))
                let first = p.mx[0].split(separator: ".").compactMap { UInt8($0) }
                #expect(Self.contains(r, [0, 4] + first), "\(domain): glue A \(p.mx[0]) missing")
            }
        }
        // A record of an MX host.
        let a = try Self.dnsQuery(port: port, name: "mx2.gmail.sink", type: 1)
        #expect(a[3] & 0x0f == 0 && a[7] == 1 && Array(a.suffix(4)) == [127, 0, 1, 2])
        // Unknown .sink names are NXDOMAIN; other domains go to accept-all (domains *).
        #expect(try Self.dnsQuery(port: port, name: "nothing.sink", type: 15)[3] & 0x0f == 3)
        let other = try Self.dnsQuery(port: port, name: "example.org", type: 15)
        #expect(Self.contains(other, Array("accept-all".utf8)))
    }

    @Test func dnsWithoutACatchAllSaysNXDOMAIN() throws {
        let sink = try SinkProcess(["--profile", Self.deterministicProfiles + "/gmail.conf", "--port", "0", "--no-require-tls",
                                    "--dns", "127.0.0.1:0", "--backend", Self.backend.rawValue])
        defer { sink.terminate() }
        let port = try #require(sink.dnsPort)
        #expect(try Self.dnsQuery(port: port, name: "example.org", type: 15)[3] & 0x0f == 3)
        let mx = try Self.dnsQuery(port: port, name: "GoogleMail.com", type: 15)
        #expect(mx[3] & 0x0f == 0 && mx[7] == 2)
    }

    /// `--dns-fault`: chosen names fail the way a run asks (SERVFAIL,
    /// NXDOMAIN, no answer at all) while every other name is answered.
    @Test func dnsFaultsAnswerSERVFAILNXDOMAINOrNothing() throws {
        let sink = try SinkProcess(["--profile", Self.deterministicProfiles + "/all.conf", "--port", "0", "--no-require-tls",
                                    "--dns", "127.0.0.1:0", "--backend", Self.backend.rawValue,
                                    "--dns-fault", "yahoo.com=servfail", "--dns-fault", "GMX.net.=nxdomain",
                                    "--dns-fault", "mx1.gmail.sink=servfail", "--dns-fault", "orange.fr=timeout"])
        defer { sink.terminate() }
        let port = try #require(sink.dnsPort)
        #expect(try Self.dnsQuery(port: port, name: "yahoo.com", type: 15)[3] & 0x0f == 2)
        #expect(try Self.dnsQuery(port: port, name: "gmx.net", type: 15)[3] & 0x0f == 3)
        // One MX host's address fails, its sibling's resolves: the domain still has a way in.
        #expect(try Self.dnsQuery(port: port, name: "mx1.gmail.sink", type: 1)[3] & 0x0f == 2)
        // …and the MX answer carries no glue for it, so an MTA asks and meets the fault.
        let gmailMX = try Self.dnsQuery(port: port, name: "gmail.com", type: 15)
        #expect(gmailMX[3] & 0x0f == 0 && gmailMX[7] == 2 && gmailMX[11] == 1, "one glue record (mx2's), not two")
        #expect(!Self.contains(gmailMX, [0, 4, 127, 0, 1, 1]) && Self.contains(gmailMX, [0, 4, 127, 0, 1, 2]))
        let mx2 = try Self.dnsQuery(port: port, name: "mx2.gmail.sink", type: 1)
        #expect(mx2[3] & 0x0f == 0 && Array(mx2.suffix(4)) == [127, 0, 1, 2])
        // The other names of a faulted provider are untouched (aol.com shares Yahoo's profile).
        let aol = try Self.dnsQuery(port: port, name: "aol.com", type: 15)
        #expect(aol[3] & 0x0f == 0 && aol[7] == 3)
        // timeout: no datagram comes back (asked thrice, 5 s each), and the responder goes on answering.
        #expect(throws: SinkTestError.self) { _ = try Self.dnsQuery(port: port, name: "orange.fr", type: 15) }
        #expect(try Self.dnsQuery(port: port, name: "wanadoo.fr", type: 15)[3] & 0x0f == 0)
    }

    @Test func badDNSFaultsExitWithUsage() {
        for arg in ["yahoo.com", "yahoo.com=refused", "=servfail"] {
            let r = SinkProcess.runToExit(["--profile", Self.deterministicProfiles + "/gmail.conf", "--no-require-tls",
                                           "--port", "0", "--dns-fault", arg])
            #expect(r.status == 2 && r.stderr.contains("--dns-fault needs NAME=servfail|nxdomain|timeout"), "\(arg): \(r.status) \(r.stderr)")
        }
    }

    // MARK: Accept-all, ids, stats, every backend

    @Test(arguments: BackendKind.testable)
    func acceptAllRecordsIdsAndCountsOnEveryBackend(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let ids = NSTemporaryDirectory() + "sink-ids-\(getpid())-\(kind.rawValue).txt"
        defer { try? FileManager.default.removeItem(atPath: ids) }
        let sink = try SinkProcess(["--accept-all", "--listen", "127.0.0.1:0", "--backend", kind.rawValue,
                                    "--threads", "2", "--stats-port", "127.0.0.1:0", "--record-ids", ids])
        let (ip, port) = try sink.address("accept-all")
        var sentIds: [String] = []
        for conn in 0..<3 {
            let c = try SinkTestClient(ip, port)
            #expect(try c.start()?.code == 220)
            for i in 0..<5 {
                let id = "msg-\(conn)-\(i)"
                #expect(try c.sendMessage(to: "r\(i)@anything.example", id: id) == nil)
                sentIds.append(id)
            }
            #expect(try c.command("QUIT")?.code == 221)
        }
        // GET /stats while running.
        let statsAddr = try #require(sink.statsAddress)
        let colon = try #require(statsAddr.lastIndex(of: ":"))
        let http = try SinkTestClient(String(statsAddr[..<colon]), UInt16(statsAddr[statsAddr.index(after: colon)...]) ?? 0)
        try http.send("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        var response = ""
        while let line = try? http.reply(), !line.lines.isEmpty {
            response += line.lines.joined(separator: "\n") + "\n"
            if http.closedByPeer { break }
        }
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        let body = try #require(response.split(separator: "\n").last)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let totals = try #require(json["totals"] as? [String: Any])
        #expect(totals["messages_accepted"] as? Int == 15)
        #expect(totals["sessions"] as? Int == 3)
        // Anything else gets its HTTP error (PeregrineHTTP's server answers for the sink).
        for (request, status) in [("POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405"),
                                  ("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "404")] {
            let other = try SinkTestClient(String(statsAddr[..<colon]), UInt16(statsAddr[statsAddr.index(after: colon)...]) ?? 0)
            try other.send(request)
            let statusLine = try #require(try other.reply()?.lines.first)
            #expect(statusLine.hasPrefix("HTTP/1.1 \(status) "), "\(request): \(statusLine)")
        }

        // SIGTERM: the counters are printed and the ids flushed.
        let out = sink.terminate()
        #expect(sink.process.terminationStatus == 0)
        #expect(out.contains("\"messages_accepted\" : 15"))
        let recorded = (try? String(contentsOfFile: ids, encoding: .utf8)) ?? ""
        // Each line is "ID ARRIVAL-UNIX-NS".
        let lines = recorded.split(separator: "\n")
        #expect(lines.allSatisfy { $0.split(separator: " ").count == 2 && Int64($0.split(separator: " ")[1]) != nil })
        #expect(lines.map { String($0.split(separator: " ")[0]) }.sorted() == sentIds.sorted())
    }

    // MARK: Command line

    @Test func badFlagsAndProfilesExitNonZeroWithAClearMessage() throws {
        let r1 = SinkProcess.runToExit(["--frobnicate"])
        #expect(r1.status == 2 && r1.stderr.contains("unknown option '--frobnicate'"))
        let r2 = SinkProcess.runToExit(["--accept-all"])
        #expect(r2.status == 2 && r2.stderr.contains("--accept-all needs --listen"))
        let r3 = SinkProcess.runToExit(["--accept-all", "--listen", "127.0.0.1:0", "--backend", "kqueue"])
        #expect(r3.status == 2 && r3.stderr.contains("unknown backend 'kqueue'"))
        let r4 = SinkProcess.runToExit([])
        #expect(r4.status == 2 && r4.stderr.contains("nothing to serve"))
        let bad = NSTemporaryDirectory() + "sink-bad-\(getpid()).conf"
        try "<isp x>\n  domains x.com\n  max-connections 5 greeting\n</isp>\n".write(toFile: bad, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let r5 = SinkProcess.runToExit(["--profile", bad])
        #expect(r5.status == 1 && r5.stderr.hasPrefix("\(bad):3: max-connections needs a quoted reply"), "\(r5.stderr)")
        let r6 = SinkProcess.runToExit(["--profile", "/nonexistent.conf"])
        #expect(r6.status == 1 && r6.stderr.contains("/nonexistent.conf") && r6.stderr.contains("No such file or directory (ENOENT)"),
                "\(r6.stderr)")
        let r7 = SinkProcess.runToExit(["--help"])
        #expect(r7.status == 0 && r7.stdout.contains("usage: peregrine-sink"))
        // Every HTTP endpoint is named, the test-only lift too (tests and scripts look for it here).
        #expect(r7.stdout.contains("GET /stats") && r7.stdout.contains("POST /penalty-box/lift"), "\(r7.stdout)")
        // The shipped Gmail profile requires TLS: without a certificate the sink names the line instead of deferring forever.
        let gmail = SinkProfileTests.profilesDir + "/gmail.conf"
        let line = try #require(try String(contentsOfFile: gmail, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.trimmingCharacters(in: .whitespaces) == "require-tls" }) + 1
        let r8 = SinkProcess.runToExit(["--profile", gmail, "--port", "0"])
        #expect(r8.status == 1 && r8.stderr.hasPrefix("\(gmail):\(line): <isp gmail> says require-tls"), "\(r8.stderr)")
    }
}
