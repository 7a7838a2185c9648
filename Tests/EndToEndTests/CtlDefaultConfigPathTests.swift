#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// `peregrine ctl` with no --config, no $PEREGRINE_CONFIG and no --host/--port:
/// it finds the daemon through /etc/peregrine/peregrine.conf (issue 17). The
/// test gives ctl its own mount namespace (`unshare -m`) in which /etc is an
/// overlay on a tmpfs and the test's directory is bound over /etc/peregrine,
/// so the machine's real /etc is never touched. Scenario 139: 127.P.139.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct CtlDefaultConfigPathTests {
    /// Runs `peregrine ctl ARGS…` in a private mount namespace where
    /// /etc/peregrine is `confDir`. Exit status and output.
    static func ctlViaDefaultPath(_ confDir: String, _ scratch: String, _ args: [String]) throws -> (Int32, String) {
        guard getuid() == 0 else { try Skip.because("mounting in a private namespace needs root") }
        let unshare = try #require(findTool("unshare"), "unshare is not installed (util-linux)")
        let quoted = (["ctl"] + args).map { "'\($0)'" }.joined(separator: " ")
        let script = """
        set -eu
        mkdir -p '\(scratch)'
        mount -t tmpfs tmpfs '\(scratch)'
        mkdir '\(scratch)/upper' '\(scratch)/work'
        mount -t overlay overlay -o lowerdir=/etc,upperdir='\(scratch)/upper',workdir='\(scratch)/work' /etc
        mkdir -p /etc/peregrine
        mount --bind '\(confDir)' /etc/peregrine
        exec env -u PEREGRINE_CONFIG '\(E2E.executable("peregrine"))' \(quoted)
        """
        return runTool(unshare, ["-m", "--propagation", "private", "sh", "-c", script], seconds: 60)
    }

    @Test(arguments: BackendKind.testable)
    func ctlFindsItsDaemonThroughTheDefaultConfigPath(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("ctl-default-\(kind.rawValue)")
        let listen = E2E.ip(139, kind)
        let confDir = dir.file("etc-peregrine")
        try FileManager.default.createDirectory(atPath: confDir, withIntermediateDirectories: true)
        let config = daemonConfig(dir, listen: listen, "")
        // The daemon reads the same file ctl will find at /etc/peregrine/peregrine.conf.
        let configPath = confDir + "/peregrine.conf"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let d = try DaemonProcess(configPath: configPath, backend: kind, logPath: dir.file("daemon.log"))
        defer { d.terminate() }

        // Read-only: the management address came from the default config (8080 on 127.0.0.1 otherwise).
        let (status, out) = try Self.ctlViaDefaultPath(confDir, dir.file("ns"), ["show", "status", "--json"])
        #expect(status == 0, "\(out)\n\(d.log.suffix(2000))")
        let json = try E2E.json(Data(out.utf8))
        #expect(json["backend"] as? String == kind.rawValue, "\(json)")

        // An action: the token came from the same file's spool (SPOOL/mgmt-token), and the pause is real.
        let (pauseStatus, pauseOut) = try Self.ctlViaDefaultPath(confDir, dir.file("ns"), ["pause", "later.test/*", "--json"])
        #expect(pauseStatus == 0, "\(pauseOut)")
        let pause = try E2E.json(Data(pauseOut.utf8))
        #expect(pause["appliesToNewQueues"] as? Bool == true, "\(pause)")
        let trace = try E2E.json(E2E.httpGet("\(d.managementHost):\(d.managementPort)", "/trace?address=someone@later.test"))
        #expect(trace["standingPauses"] as? [String] == ["later.test/*"], "\(trace)")

        // The real /etc is untouched.
        #expect(!FileManager.default.fileExists(atPath: "/etc/peregrine/peregrine.conf") || (try? String(contentsOfFile: "/etc/peregrine/peregrine.conf", encoding: .utf8)) != config)
    }
}
