#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// `peregrine check-config` and `run` as an operator meets them during a
/// migration: every error in one run, errors before warnings, exit 0 with
/// warnings only, `--strict`, `--json`, and why a file cannot be read.
/// Scenario 171: 127.P.171.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct CheckConfigCommandTests {
    let exe = E2E.executable("peregrine")

    @Test func everyErrorInOneRunAndRunRefusesWithTheSameList() throws {
        let dir = try TestDirectory("check-all")
        let address = PrivateLoopback.address(171, 1), spool = dir.file("spool")
        let path = try dir.write("peregrine.conf", """
            smtp-listener \(address):2525
            spool \(spool)
            smtp-listner \(address):2526
            <domain a.test>
                max-smtp-out lots
            </domain>
            <source 127.0.0.0/8>
                smtp-service maybe
            </source>
            threads none

            """)
        let expected = [
            "\(path):3: unknown directive 'smtp-listner'",
            "\(path):5: max-smtp-out: 'lots' is not a whole number",
            "\(path):8: smtp-service: 'maybe' is not yes or no",
            "\(path):10: threads: 'none' is not a whole number",
        ]
        let check = E2E.run(exe, ["check-config", path], timeout: 30)
        #expect(check.status == 1, "\(check)")
        let lines = check.stderr.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(4)) == expected, "\(check.stderr)")
        #expect(lines.last == "\(path): 4 errors, 0 warnings", "\(check.stderr)")
        #expect(check.stdout.isEmpty)

        let run = E2E.run(exe, ["run", "--config", path, "--backend", "epoll"], timeout: 30)
        #expect(run.status == 1, "\(run)")
        #expect(Array(run.stderr.split(separator: "\n").map(String.init).prefix(4)) == expected, "\(run.stderr)")
        #expect(run.stderr.contains("not starting: \(path): 4 errors"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: spool), "run created the spool before refusing its config")
        #expect(!PrivateLoopback.canConnect(address, 2525), "something listens on \(address):2525")

        let json = E2E.run(exe, ["check-config", "--json", path], timeout: 30)
        #expect(json.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        let errors = try #require(object["errors"] as? [[String: Any]])
        #expect(errors.compactMap { $0["line"] as? Int } == [3, 5, 8, 10])
        #expect(errors.compactMap { $0["directive"] as? String } == ["smtp-listner", "max-smtp-out", "smtp-service", "threads"])
        #expect(object["ok"] as? Bool == false)
    }

    /// Warnings alone exit 0 (the config loads); --strict makes them errors.
    @Test func warningsAloneExitZeroAndStrictRefuses() throws {
        let dir = try TestDirectory("check-warn")
        let path = try dir.write("peregrine.conf", "spool \(dir.file("spool"))\n")
        let check = E2E.run(exe, ["check-config", path], timeout: 30)
        #expect(check.status == 0, "\(check)")
        #expect(check.stderr.contains("\(path): warning: no smtp-listener"), "\(check.stderr)")
        #expect(check.stdout.contains("\(path): OK"), "\(check.stdout)")
        let strict = E2E.run(exe, ["check-config", "--strict", path], timeout: 30)
        #expect(strict.status == 1, "\(strict)")
        #expect(strict.stderr.contains("\(path): no smtp-listener") && strict.stderr.contains("1 error, 0 warnings"), "\(strict.stderr)")
        let usage = E2E.run(exe, ["check-config", "--frob", path], timeout: 30)
        #expect(usage.status == 2, "\(usage)")
    }

    @Test func missingFileSaysENOENT() throws {
        let dir = try TestDirectory("check-missing")
        let path = dir.file("absent.conf")
        let check = E2E.run(exe, ["check-config", path], timeout: 30)
        #expect(check.status == 1)
        #expect(check.stderr.hasPrefix("\(path): cannot open the config file: No such file or directory (ENOENT)\n"), "\(check.stderr)")
        let run = E2E.run(exe, ["run", "--config", path], timeout: 30)
        #expect(run.status == 1 && run.stderr.contains("(ENOENT)"), "\(run)")
    }

    /// A file the user may not read says EACCES. Root reads anything, so as
    /// root the check runs as `nobody` (setpriv), which the file's 0600 excludes.
    @Test func unreadableFileSaysEACCES() throws {
        let dir = try TestDirectory("check-eacces")
        chmod(dir.path, 0o755)
        let path = try dir.write("secret.conf", "spool /tmp/x\n")
        chmod(path, 0o600)
        var command = [exe, "check-config", path]
        if getuid() == 0 {
            guard let setpriv = findTool("setpriv") else { try Skip.because("setpriv not installed: cannot drop root to test EACCES") }
            guard access(exe, X_OK) == 0, Self.worldCanReach(exe) else {
                try Skip.because("\(exe) is not reachable by nobody: cannot test EACCES as root")
            }
            command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + command
        } else {
            chmod(path, 0o000)
        }
        let check = E2E.run(command[0], Array(command.dropFirst()), timeout: 30)
        #expect(check.status == 1, "\(check)")
        #expect(check.stderr.hasPrefix("\(path): cannot open the config file: Permission denied (EACCES)\n"), "\(check.stderr)")
    }

    /// Every directory above `path` is world-searchable and the file world-executable.
    static func worldCanReach(_ path: String) -> Bool {
        var current = URL(fileURLWithPath: path)
        while current.path != "/" {
            var st = stat()
            guard stat(current.path, &st) == 0, st.st_mode & 0o001 != 0 else { return false }
            current.deleteLastPathComponent()
        }
        return true
    }
}
