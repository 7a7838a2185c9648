#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
import PeregrineAccounting

/// Delivery while every descriptor is taken (stop 15's soak): the daemon
/// under `prlimit --nofile=64:` with more clients than that, mail for five
/// queues handed in on one of them (four messages: four connections a wave). Each delivery connect fails with EMFILE
/// before reaching the receiver. Before: every failed connection of every
/// wave blamed the MX host and logged "queue …: every host failed" with a
/// `tq` record (~200 lines a second in the soak). Now the queues wait their
/// retry time, the host is not blamed, the log says it once when it starts
/// and once, with the count, when a connection opens again, and the mail is
/// delivered once descriptors are free. Per backend; scenario 141.
@Suite(.serialized, .timeLimit(.minutes(5)), .blockingIO) struct DaemonLocalShortageTests {
    static let domains = (1...5).map { "d\($0).shortage.test" }
    static let messages = 4

    @Test(arguments: BackendKind.testable)
    func connectsFailingForLackOfDescriptorsBackOffAndLogOnce(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let paths: [String] = ["/usr/bin/prlimit", "/bin/prlimit"]
        let prlimit = try #require(paths.first { FileManager.default.isExecutableFile(atPath: $0) },
                                   "prlimit (util-linux) is missing")
        let dir = try TestDirectory("local-shortage-\(kind.rawValue)")
        let listen = E2E.ip(141, kind, host: 9), mx = E2E.ip(141, kind, host: 1)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("all", domains: Self.domains.joined(separator: " "), mx: [mx]))
        defer { sink.terminate() }
        let (_, port) = try sink.address("all")
        // retry-after 1s: a wave every second at most per queue while descriptors lack.
        let domainBlocks = Self.domains.map {
            "<domain \($0)>\n    route [\(mx)]:\(port)\n    retry-after 1s\n    max-smtp-out 4\n    use-starttls no\n</domain>"
        }.joined(separator: "\n")
        let config = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, domainBlocks))
        let d = try DaemonProcess(configPath: config, backend: kind, threads: 1, logPath: dir.file("daemon.log"),
                                  launcher: [prlimit, "--nofile=64:", "--"])
        defer { d.terminate(); withExtendedLifetime(dir) {} }
        let diagnostics = { "daemon log:\n\(d.log.suffix(3000))" }

        // The first client is served; then more clients than descriptors (the rest wait in the backlog).
        let injector = try RawSMTPClient(d.listenIP, d.listenPort, timeoutSeconds: 10)
        #expect(injector.reply()?.hasPrefix("220 ") == true, "\(diagnostics())")
        var clients: [RawSMTPClient] = []
        for _ in 0..<90 { clients.append(try RawSMTPClient(d.listenIP, d.listenPort, timeoutSeconds: 2)) }
        try #require(E2E.waitUntil(20) { d.log.contains("accept on") }, "descriptors not exhausted: \(diagnostics())")

        // Four messages for the five queues, on the connection already open:
        // each queue opens four connections a wave (max-smtp-out 4), as the soak's did.
        var dialogue: [String] = []
        func say(_ line: String) -> String {
            injector.send(line + "\r\n")
            let r = injector.reply() ?? "(none)"
            dialogue.append("\(line.prefix(40)) → \(r)")
            return r
        }
        #expect(say("EHLO shortage.test").hasPrefix("250"))
        for m in 0..<Self.messages {
            #expect(say("MAIL FROM:<s@shortage.test>").hasPrefix("250"), "\(dialogue)")
            for domain in Self.domains { #expect(say("RCPT TO:<u\(m)@\(domain)>").hasPrefix("250"), "\(dialogue)") }
            #expect(say("DATA").hasPrefix("354"))
            #expect(say("Subject: shortage \(m)\r\n\r\nhello\r\n.").hasPrefix("250"), "\(dialogue) \(diagnostics())")
        }

        let began = "connections fail for lack of local resources"
        try #require(E2E.waitUntil(20) { d.log.contains(began) }, "no local shortage reported: \(diagnostics())")
        // Let the queues retry under EMFILE for a while (a soak window, not synchronisation): several waves.
        usleep(2_500_000)
        let exhaustedLog = d.log
        let everyHostFailed = exhaustedLog.split(separator: "\n").filter { $0.contains("every host failed") }
        #expect(everyHostFailed.isEmpty,
                "the MX host was blamed for a local failure: \(everyHostFailed.count) line(s), first: \(everyHostFailed.first ?? "")")
        #expect(exhaustedLog.split(separator: "\n").filter { $0.contains(began) }.count == 1, "\(diagnostics())")

        // Free the descriptors: the mail goes once a queue's wait is over.
        clients.removeAll()
        _ = say("QUIT")
        let acct = dir.file("acct.csv")
        func records() -> [AccountingRecord] { (try? AccountingCSVReader.readRecords(path: acct)) ?? [] }
        #expect(E2E.waitUntil(60) { records().filter { $0.type == .delivered }.count == Self.domains.count * Self.messages },
                "not delivered after descriptors came back: \(diagnostics())")
        // Each episode is told twice, at its start and at its end. While the daemon takes
        // back the freed descriptors, a second short episode may come; never a line per failure.
        let lines = d.log.split(separator: "\n")
        let ended = lines.filter { $0.contains("connections open again, after") }
        #expect(!ended.isEmpty && ended.count == lines.filter { $0.contains(began) }.count, "\(ended) \(diagnostics())")
        #expect(!lines.contains { $0.contains("every host failed") }, "\(diagnostics())")
        // No tq record blames the host, no t record per recipient per wave: the mail waited, it was not attempted.
        let transient = records().filter { $0.type == .transientQueue || $0.type == .transient }
        #expect(transient.isEmpty, "\(transient.map(\.dsnDiag))")
        print("local shortage on \(kind): \(ended.first ?? "no end line")")
    }
}
