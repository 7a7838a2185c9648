#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// The operator's CLI (issue 17) against a running daemon: ctl finds the daemon
/// and its token from the configuration alone; a pause given before its queue
/// exists holds the queue when it appears; show queues as a table and JSON;
/// delete --job-id, reset counters, show vmtas, show domain, trace; and
/// `--version` and `--help` on every executable and subcommand. Scenario 219: 127.P.219.x.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct CtlCommandTests {
    static var peregrine: String { E2E.executable("peregrine") }

    @Test func versionNamesTheCommitAndBuildDate() throws {
        let (status, out) = runTool(Self.peregrine, ["--version"], seconds: 30)
        #expect(status == 0, "\(out)")
        let commit = try #require(out.range(of: "commit ").map { out[$0.upperBound...].prefix { $0.isHexDigit } })
        #expect(commit.count == 40, "\(out)")
        #expect(out.contains("built 20"), "\(out)")
    }

    @Test func helpOnEveryExecutableAndSubcommandExitsZero() {
        let runs: [(String, [String])] = [
            ("peregrine", ["--help"]), ("peregrine", ["run", "--help"]), ("peregrine", ["check-config", "--help"]),
            ("peregrine", ["ctl", "--help"]), ("peregrine", ["spool-check", "--help"]),
            ("peregrine-sink", ["--help"]), ("peregrine-loadgen", ["--help"]), ("peregrine-bench", ["--help"]),
        ] + ["echo", "spool", "smtp-parser", "sink", "relay", "relay-100k", "isp-mix", "backlog", "crash", "summarize",
             "dashboard", "compare", "tune"].map { ("peregrine-bench", [$0, "--help"]) }
        for (exe, args) in runs {
            let r = E2E.run(E2E.executable(exe), args, timeout: 30)
            #expect(r.status == 0, "\(exe) \(args.joined(separator: " ")) exited \(r.status): \(r.stderr)")
            #expect(r.stdout.lowercased().contains("usage"), "\(exe) \(args.joined(separator: " ")) printed no usage on stdout")
        }
    }

    /// `peregrine ctl ARGS…` with only PEREGRINE_CONFIG to find the daemon (no --host/--port/--token-file).
    static func ctl(_ config: String, _ args: [String]) -> (Int32, String) {
        runTool(peregrine, ["ctl"] + args, environment: ["PEREGRINE_CONFIG": config], seconds: 30)
    }

    static func ctlJSON(_ config: String, _ args: [String]) throws -> [String: Any] {
        let (status, out) = ctl(config, args + ["--json"])
        try #require(status == 0, "ctl \(args): \(out)")
        return try E2E.json(Data(out.utf8))
    }

    @Test(arguments: BackendKind.testable)
    func ctlDrivesTheDaemonFromItsConfig(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("ctl-\(kind.rawValue)")
        let listen = E2E.ip(219, kind), mx = E2E.ip(219, kind, host: 1)
        let sink = try startSink(dir, serviceIP: listen, sinkProfile("all", domains: "a.test hold.test job.test", mx: [mx]))
        defer { sink.terminate() }
        let (_, port) = try sink.address("all")
        let configPath = try dir.write("peregrine.conf", daemonConfig(dir, listen: listen, """
            <source \(listen)/32>
                always-allow-relaying yes
                process-x-virtual-mta yes
                process-x-job yes
                default-virtual-mta vmta1
            </source>
            <source 127.0.0.1/32>
                always-allow-relaying yes
                process-x-virtual-mta yes
                process-x-job yes
                default-virtual-mta vmta1
            </source>
            <domain a.test>
                route [\(mx)]:\(port)
                max-smtp-out 7
            </domain>
            <domain hold.test>
                route [\(mx)]:\(port)
            </domain>
            <domain job.test>
                route [\(mx)]:\(port)
            </domain>
            """))
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let diagnostics = { "daemon log:\n\(d.log.suffix(2000))" }

        // Found from the config alone: the management address and, for actions, the token.
        let status = try Self.ctlJSON(configPath, ["show", "status"])
        #expect(status["backend"] as? String == kind.rawValue)

        // A pause before the queue exists holds it when it appears (it used to match nothing and let mail out).
        let pause = try Self.ctlJSON(configPath, ["pause", "hold.test/*"])
        #expect(pause["matched"] as? Int == 0)
        #expect(pause["appliesToNewQueues"] as? Bool == true)
        #expect(try Self.ctlJSON(configPath, ["pause", "job.test/*"])["appliesToNewQueues"] as? Bool == true)
        let c = try d.client()
        #expect(try c.send(to: ["u@hold.test"], id: "hold1") == nil)
        #expect(try c.send(to: ["v@a.test"], id: "a1") == nil)
        #expect(try c.send(to: ["j1@job.test", "k1@job.test"], id: "j1a", headers: ["X-Job: job-one"]) == nil)
        #expect(try c.send(to: ["j2@job.test"], id: "j2a", headers: ["X-Job: job-two"]) == nil)
        c.quit()
        // a.test delivers (so the daemon is sending), while hold.test's queue exists, paused, with its mail.
        let settled = E2E.waitUntil(30) {
            let queues = (try? d.queues()) ?? [:]
            return (queues["a.test/vmta1"]?["delivered"] as? Int ?? 0) == 1 && (queues["hold.test/vmta1"]?["ready"] as? Int) == 1
                && (queues["job.test/vmta1"]?["ready"] as? Int) == 3
        }
        try #require(settled, "\((try? d.queues()) ?? [:])\n\(diagnostics())")
        let held = try #require(try d.queues()["hold.test/vmta1"])
        #expect(held["paused"] as? Bool == true)
        #expect(held["delivered"] as? Int == 0)

        // show queues: a table for people, JSON for scripts.
        let (tableStatus, table) = Self.ctl(configPath, ["show", "queues"])
        #expect(tableStatus == 0)
        let lines = table.split(separator: "\n")
        #expect(lines.first?.hasPrefix("QUEUE") == true && lines.first?.contains("MODE") == true, "\(table)")
        #expect(lines.contains { $0.hasPrefix("hold.test/vmta1") && $0.contains("paused") }, "\(table)")
        let listed = try Self.ctlJSON(configPath, ["show", "queues"])["queues"] as? [[String: Any]] ?? []
        #expect(Set(listed.compactMap { $0["queue"] as? String }).isSuperset(of: ["a.test/vmta1", "hold.test/vmta1", "job.test/vmta1"]))

        // delete --job-id: only job-one's two recipients go, job-two's stays.
        let deleted = try Self.ctlJSON(configPath, ["delete", "--job-id", "job-one"])
        #expect(deleted["recipients"] as? Int == 2, "\(deleted)")
        #expect(try d.queues()["job.test/vmta1"]?["ready"] as? Int == 1)

        // show vmtas, show domain, trace.
        let vmtas = try Self.ctlJSON(configPath, ["show", "vmtas"])["vmtas"] as? [[String: Any]] ?? []
        #expect(vmtas.first { $0["name"] as? String == "vmta1" }?["sourceIP"] as? String == "127.0.0.10", "\(vmtas)")
        #expect(vmtas.first { $0["name"] as? String == "vmta2" }?["pools"] as? [String] == ["pool1"], "\(vmtas)")
        let (vmtaTableStatus, vmtaTable) = Self.ctl(configPath, ["show", "vmtas"])
        #expect(vmtaTableStatus == 0 && vmtaTable.contains("127.0.0.11"), "\(vmtaTable)")
        let domain = try Self.ctlJSON(configPath, ["show", "domain", "a.test"])
        #expect((domain["settings"] as? [String: Any])?["maxSMTPOut"] as? String == "7", "\(domain)")
        #expect(domain["vmta"] as? String == "vmta1")
        let defaults = try Self.ctlJSON(configPath, ["show", "domain", "elsewhere.test"])
        #expect((defaults["settings"] as? [String: Any])?["maxSMTPOut"] as? String != "7", "\(defaults)")
        let trace = try Self.ctlJSON(configPath, ["trace", "someone@hold.test"])
        #expect(trace["queue"] as? String == "hold.test/vmta1")
        #expect(trace["standingPauses"] as? [String] == ["hold.test/*"], "\(trace)")
        #expect((trace["queueNow"] as? [String: Any])?["paused"] as? Bool == true)
        #expect((trace["pool"] as? [String: Any])?["name"] as? String == "pool1")
        let (traceTableStatus, traceTable) = Self.ctl(configPath, ["trace", "someone@a.test"])
        #expect(traceTableStatus == 0 && traceTable.contains("maxSMTPOut") && traceTable.contains("a.test/vmta1"), "\(traceTable)")

        // Resume ends the standing pause: the held mail goes.
        _ = try Self.ctlJSON(configPath, ["resume", "hold.test/*"])
        let released = E2E.waitUntil(30) { (try? d.queues())?["hold.test/vmta1"]?["delivered"] as? Int == 1 }
        #expect(released, "\((try? d.queues()) ?? [:])")

        // reset counters: the totals start again from 0.
        let before = try Self.ctlJSON(configPath, ["show", "status"])
        #expect((before["received"] as? Int ?? 0) >= 4)
        _ = try Self.ctlJSON(configPath, ["reset", "counters"])
        let after = try Self.ctlJSON(configPath, ["show", "status"])
        #expect(after["received"] as? Int == 0 && after["delivered"] as? Int == 0, "\(after)")

        // Without the token an action is refused with the reason; a bad command is a usage error.
        let (denied, deniedOut) = runTool(Self.peregrine, ["ctl", "--host", d.managementHost, "--port", d.managementPort,
                                                           "pause", "a.test/*"], seconds: 30)
        #expect(denied != 0 && (deniedOut.contains("401") || deniedOut.contains("Bearer")), "\(deniedOut)")
        let (usage, _) = Self.ctl(configPath, ["show", "nonsense"])
        #expect(usage == 2)
    }
}
