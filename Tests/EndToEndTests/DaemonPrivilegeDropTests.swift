#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport
import PeregrineAccounting

/// `run-as-user` / `run-as-group` (issue 14, Runtime): started as root, the
/// daemon binds port 25 on a private 127.x address, then runs as `nobody` /
/// `nogroup` (the unprivileged user and group Debian ships; no user is
/// created) with no way back to root, and keeps working: it accepts and
/// delivers mail, its spool takes new messages, the accounting file rotates
/// by size and the new file is written, and a reload (which re-reads the
/// config as the user) changes nothing of that.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonPrivilegeDropTests {
    static let nobody: (uid: uid_t, gid: gid_t)? = {
        guard let pw = getpwnam("nobody"), let gr = getgrnam("nogroup") else { return nil }
        return (pw.pointee.pw_uid, gr.pointee.gr_gid)
    }()
    static let canSwitch = getuid() == 0 && nobody != nil

    /// `Uid:`/`Gid:` (real, effective, saved, filesystem), `Groups:` and `CapEff:` of a process.
    static func status(_ pid: Int32) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            out[String(line[..<colon])] = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
                .joined(separator: " ")
        }
        return out
    }

    static func owner(_ path: String) -> (uid_t, gid_t)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_uid, st.st_gid)
    }

    /// Every path under `root` (itself included).
    static func walk(_ root: String) -> [String] {
        var out = [root]
        for name in (try? FileManager.default.subpathsOfDirectory(atPath: root)) ?? [] { out.append(root + "/" + name) }
        return out
    }

    /// The records of an accounting file and of every file it was rotated to.
    static func allRecords(_ path: String) -> [AccountingRecord] {
        (RotatedFiles.list(for: path) + [path]).flatMap { accounting($0) }
    }

    @Test(.enabled(if: canSwitch, "needs root and the nobody user and nogroup group"), arguments: BackendKind.testable)
    func bindsPort25AsRootThenRunsAsNobodyAndKeepsItsFilesWritable(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let (uid, gid) = try #require(Self.nobody)
        let s = try DaemonEndToEndTests.Scenario("privdrop", 152, kind)
        let mx = E2E.ip(152, kind, host: 1)
        let sink = try startSink(s.dir, serviceIP: s.listenIP, sinkProfile("priv", domains: "priv.test", mx: [mx]))
        s.sink = sink
        let (_, port) = try sink.address("priv")
        // The log directory belongs to the user, as an installer makes it
        // (install -d -o nobody): rotation creates files there after the drop.
        let logs = s.dir.file("logs")
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        #expect(chown(logs, uid, gid) == 0)
        let acct = logs + "/acct.csv"
        let logPath = logs + "/peregrine.log"
        let d = try s.startDaemon("""
            smtp-listener \(s.listenIP):25
            http-mgmt-port \(s.listenIP):8125
            spool \(s.dir.file("spool"))
            log-file \(logPath)
            run-as-user nobody
            run-as-group nogroup
            <source 127.0.0.0/8>
                always-allow-relaying yes
            </source>
            <acct-file \(acct)>
                records r,d
                max-size 2k
            </acct-file>
            <domain priv.test>
                route [\(mx)]:\(port)
            </domain>

            """)
        #expect(d.listenPort == 25)

        // The process: every id nobody/nogroup, no other group, no capability left.
        let st = Self.status(d.process.processIdentifier)
        #expect(st["Uid"] == "\(uid) \(uid) \(uid) \(uid)", "\(st)")
        #expect(st["Gid"] == "\(gid) \(gid) \(gid) \(gid)", "\(st)")
        #expect(st["Groups"] == "\(gid)", "\(st)")
        #expect(st["CapEff"] == "0000000000000000" && st["CapPrm"] == "0000000000000000", "\(st)")
        #expect(d.log.contains("dropped root: now running as user nobody (uid \(uid)), group nogroup (gid \(gid))"), "\(d.log)")

        // Mail in and out, enough accounting lines to rotate the file (2k) at least once.
        let c = try d.client()
        for m in 0..<8 { #expect(try c.send(to: ["p\(m)@priv.test"], id: "priv-\(m)") == nil) }
        #expect(E2E.waitUntil(40, every: 0.2) { Self.allRecords(acct).of(.delivered).count == 8 }, "\(s.diagnostics)")
        #expect(!RotatedFiles.list(for: acct).isEmpty, "the accounting file never rotated")

        // A reload, then more mail: the spool still takes it (the 250 needs its fsync).
        _ = try d.ctl(["reload"])
        #expect(E2E.waitUntil(20) { d.log.contains("reloaded \(d.configPath)") }, "\(d.log)")
        for m in 8..<14 { #expect(try c.send(to: ["p\(m)@priv.test"], id: "priv-\(m)") == nil) }
        c.quit()
        #expect(E2E.waitUntil(40, every: 0.2) { Self.allRecords(acct).of(.delivered).count == 14 }, "\(s.diagnostics)")
        d.terminate()

        // Everything the daemon owns or made belongs to the user: the spool
        // (segments written after the drop too), the accounting files (the
        // rotated ones and the one created after the drop), the log.
        let spoolFiles = Self.walk(s.dir.file("spool"))
        #expect(spoolFiles.count > 2, "\(spoolFiles)")
        for f in spoolFiles + [acct, logPath] + RotatedFiles.list(for: acct) {
            let o = Self.owner(f)
            #expect(o?.0 == uid && o?.1 == gid, "\(f) is owned by \(o.map { "\($0.0):\($0.1)" } ?? "nobody knows")")
        }
        #expect(d.log.contains(" stopped") || d.log.contains("peregrine: stopped"), "\(d.log)")
        #expect(!d.log.contains("is not writable by nobody"), "\(d.log)")
    }

    @Test func anUnknownUserRefusesToStart() throws {
        let dir = try TestDirectory("privdrop-bad")
        let config = try dir.write("peregrine.conf", """
            smtp-listener \(PrivateLoopback.address(153, 9)):2525
            spool \(dir.file("spool"))
            run-as-user no-such-user-peregrine

            """)
        let r = E2E.run(E2E.executable("peregrine"), ["run", "--config", config, "--backend", "epoll"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("run-as-user: no such user 'no-such-user-peregrine'"), "\(r.stderr)")
    }
}
