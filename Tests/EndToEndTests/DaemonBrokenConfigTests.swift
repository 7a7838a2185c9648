#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineAccounting
import PeregrineIO

/// Broken configuration files against the real executable: `check-config`
/// and `run` both exit 1 with `FILE:LINE: …` naming the directive, and `run`
/// starts nothing (no spool directory, no listener). Scenario 62: 127.P.62.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonBrokenConfigTests {
    struct Broken: Sendable, CustomStringConvertible {
        let name: String
        /// The config body; `LISTEN` and `SPOOL` are filled in.
        let text: String
        /// The line the message must name, and a word it must contain.
        let line: Int
        let mentions: String
        var description: String { name }
    }

    static let cases: [Broken] = [
        Broken(name: "misspelt directive", text: "smtp-listener LISTEN\nspool SPOOL\nsmtp-listner LISTEN\n",
               line: 3, mentions: "smtp-listner"),
        Broken(name: "bad value in a domain block", text: "smtp-listener LISTEN\nspool SPOOL\n<domain a.test>\n    max-smtp-out lots\n</domain>\n",
               line: 4, mentions: "max-smtp-out"),
        Broken(name: "bad boolean in a source block", text: "smtp-listener LISTEN\nspool SPOOL\n<source 127.0.0.0/8>\n    smtp-service maybe\n</source>\n",
               line: 4, mentions: "smtp-service"),
        Broken(name: "directive twice in a block", text: "smtp-listener LISTEN\nspool SPOOL\n<source 127.0.0.0/8>\n    smtp-service yes\n    smtp-service no\n</source>\n",
               line: 5, mentions: "smtp-service"),
        Broken(name: "bad rate", text: "smtp-listener LISTEN\nspool SPOOL\n<domain *>\n    max-msg-rate fast\n</domain>\n",
               line: 4, mentions: "max-msg-rate"),
        Broken(name: "unknown virtual-mta in a pool", text: "smtp-listener LISTEN\nspool SPOOL\n<virtual-mta-pool p>\n    virtual-mta nowhere\n</virtual-mta-pool>\n",
               line: 4, mentions: "nowhere"),
    ]

    @Test(arguments: cases)
    func brokenFilesAreRefusedWithFileAndLineAndNothingStarts(_ broken: Broken) throws {
        let dir = try TestDirectory("broken-config")
        let address = PrivateLoopback.address(62, 1 + (Self.cases.firstIndex { $0.name == broken.name } ?? 0))
        let spool = dir.file("spool")
        let path = try dir.write("peregrine.conf", broken.text.replacingOccurrences(of: "LISTEN", with: "\(address):2525")
            .replacingOccurrences(of: "SPOOL", with: spool))
        let exe = E2E.executable("peregrine")
        let check = E2E.run(exe, ["check-config", path], timeout: 30)
        #expect(check.status == 1, "check-config exit \(check.status): \(check.stdout) \(check.stderr)")
        #expect(check.stderr.contains("\(path):\(broken.line): ") && check.stderr.contains(broken.mentions), "\(check.stderr)")
        let run = E2E.run(exe, ["run", "--config", path, "--backend", "epoll"], timeout: 30)
        #expect(run.status == 1, "run exit \(run.status): \(run.stderr)")
        #expect(run.stderr.contains("\(path):\(broken.line): ") && run.stderr.contains(broken.mentions), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: spool), "run created the spool before refusing its config")
        #expect(!PrivateLoopback.canConnect(address, 2525), "something listens on \(address):2525")
    }

    /// A certificate and a key that do not match: refused at the key's line by
    /// both commands, before anything is opened.
    @Test func mismatchedTLSKeyIsRefusedBeforeAnythingStarts() throws {
        let dir = try TestDirectory("broken-tls")
        let openssl = try #require(findTool("openssl"), "openssl not installed")
        for name in ["a", "b"] {
            let (status, out) = runTool(openssl, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                                  "-nodes", "-subj", "/CN=\(name).test", "-days", "1",
                                                  "-keyout", dir.file("\(name)-key.pem"), "-out", dir.file("\(name)-cert.pem")])
            try #require(status == 0, "\(out)")
        }
        let address = PrivateLoopback.address(62, 100), spool = dir.file("spool")
        let path = try dir.write("peregrine.conf", """
            smtp-listener \(address):2525
            spool \(spool)
            smtp-server-tls-certificate \(dir.file("a-cert.pem"))
            smtp-server-tls-key \(dir.file("b-key.pem"))

            """)
        let exe = E2E.executable("peregrine")
        let check = E2E.run(exe, ["check-config", path], timeout: 30)
        #expect(check.status == 1 && check.stderr.contains("\(path):4: smtp-server-tls-key: "), "\(check.status) \(check.stderr)")
        let run = E2E.run(exe, ["run", "--config", path, "--backend", "epoll"], timeout: 30)
        #expect(run.status == 1 && run.stderr.contains("\(path):4: smtp-server-tls-key: "), "\(run.status) \(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: spool), "run created the spool before refusing its key")
        #expect(!PrivateLoopback.canConnect(address, 2525))
    }

    /// The listener's address is taken (a socket of the test's, without
    /// SO_REUSEPORT): `run` exits 1 naming the address, instead of running
    /// without its listener.
    @Test func listenerAddressInUseStopsTheDaemon() throws {
        let dir = try TestDirectory("busy-listener")
        let address = PrivateLoopback.address(62, 101)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(2525).bigEndian
        inet_pton(AF_INET, address, &sa.sin_addr)
        try #require(withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0 && listen(fd, 1) == 0)
        let path = try dir.write("peregrine.conf", "smtp-listener \(address):2525\nhttp-mgmt-port \(address):8125\nspool \(dir.file("spool"))\n")
        let run = E2E.run(E2E.executable("peregrine"), ["run", "--config", path, "--backend", "epoll"], timeout: 30)
        #expect(run.status == 1, "run exit \(run.status): \(run.stderr)")
        #expect(run.stderr.contains("\(address):2525"), "\(run.stderr)")
    }
}
