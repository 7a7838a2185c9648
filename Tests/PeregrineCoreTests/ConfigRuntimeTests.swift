import Testing
@testable import PeregrineDaemon

// Issue 14, Logging and Runtime: log-file, log-rotate, the <source> log-*
// switches and run-as-*; bad values and contradictions get file:line.
@Suite struct ConfigRuntimeTests {
    func parse(_ text: String) throws -> PeregrineConfig { try PeregrineConfig.parse(text, file: "r.conf") }

    func error(_ text: String) -> String? {
        do { _ = try PeregrineConfig.parse(text, file: "r.conf"); return nil } catch { return error.description }
    }

    @Test func defaults() throws {
        let c = try parse("spool /var/spool/p\n")
        #expect(c.runtime.logFile == nil)
        #expect(c.runtime.runAsUser == nil && c.runtime.runAsGroup == nil && c.runtime.runAsRoot == nil)
        let s = c.source(forIP: "127.0.0.1")
        #expect(!s.logConnections && !s.logCommands && !s.logData)
    }

    @Test func logFileRotatesDailyAndKeepsTenUnlessTold() throws {
        let o = try #require(try parse("log-file /var/log/peregrine/log\n").runtime.logFile)
        #expect(o.path == "/var/log/peregrine/log")
        #expect(o.moveInterval == 86_400 && o.keep == 10 && o.maxSize == nil)
        // PowerMTA's form: a count of files kept.
        let p = try #require(try parse("log-rotate 3\nlog-file /var/log/p.log\n").runtime.logFile)
        #expect(p.keep == 3 && p.moveInterval == 86_400)
        let q = try #require(try parse("log-file /l\nlog-rotate keep=5 max-size=20M interval=1h\n").runtime.logFile)
        #expect(q.keep == 5 && q.maxSize == 20 << 20 && q.moveInterval == 3600)
        let r = try #require(try parse("log-file /l\nlog-rotate interval=never\n").runtime.logFile)
        #expect(r.moveInterval == nil)
    }

    @Test func worldReadable() throws {
        #expect(try parse("log-file /l\nlog-file-world-readable yes\nlog-rotate 2\n").runtime.logFile?.worldReadable == true)
        #expect(try parse("log-file /l\n").runtime.logFile?.worldReadable == false)
        let c = try parse("<acct-file /a.csv>\nworld-readable no\n</acct-file>\n<acct-file /b.csv>\n</acct-file>\n")
        #expect(c.accountingFiles.map(\.worldReadable) == [false, true])
    }

    @Test func sourceLogSwitches() throws {
        let c = try parse("""
            <source 10.0.0.0/8>
                log-connections yes
                log-commands yes
                log-data yes
            </source>
            """)
        let s = c.source(forIP: "10.1.2.3")
        #expect(s.logConnections && s.logCommands && s.logData)
        #expect(!c.source(forIP: "192.0.2.1").logCommands)
    }

    @Test func runAs() throws {
        let c = try parse("run-as-user nobody\nrun-as-group nogroup\nrun-as-root no\n")
        #expect(c.runtime.runAsUser == "nobody" && c.runtime.runAsGroup == "nogroup" && c.runtime.runAsRoot == false)
        #expect(try parse("run-as-root yes\n").runtime.runAsRoot == true)
    }

    @Test(arguments: [
        ("log-file relative/log\n", "r.conf:1: log-file: 'relative/log' is not an absolute path"),
        ("log-rotate 3\n", "r.conf:1: log-rotate needs a log-file to rotate"),
        ("log-file /l\nlog-rotate 10m\n", "r.conf:2: log-rotate: '10m' is not understood"),
        ("log-file /l\nlog-rotate size=1M\n", "r.conf:2: log-rotate: unknown option 'size'"),
        ("log-file /l\nlog-rotate max-size=1k\n", "r.conf:2: log-rotate: max-size 1k is too small"),
        ("log-file /l\nlog-rotate interval=0s\n", "r.conf:2: log-rotate: interval must be at least 1s"),
        ("run-as-root maybe\n", "r.conf:1:"),
        ("run-as-root yes\nrun-as-user nobody\n", "r.conf:2: run-as-user contradicts run-as-root yes"),
        ("run-as-group nogroup\n", "r.conf:1: run-as-group needs run-as-user"),
        ("log-file /a\nlog-file /b\n", "r.conf:2: log-file is already set at line 1"),
        ("<source 0/0>\nlog-commands perhaps\n</source>\n", "r.conf:2:"),
        ("<domain x.test>\nlog-file /l\n</domain>\n", "r.conf:2:"),
    ])
    func mistakes(_ text: String, _ expected: String) {
        let e = error(text)
        #expect(e?.hasPrefix(expected) == true, "\(e ?? "loaded")")
    }
}
