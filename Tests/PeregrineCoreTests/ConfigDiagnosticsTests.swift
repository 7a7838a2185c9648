import Foundation
import Testing
@testable import PeregrineConfig
@testable import PeregrineDaemon

/// One load reports every error in the file, in file order, and goes on
/// past each: a migration from PowerMTA meets many at once (issue #14).
@Suite struct ConfigDiagnosticsTests {
    func diagnose(_ text: String, file: String = "d.conf") -> ConfigDiagnostics {
        var diagnostics = ConfigDiagnostics()
        _ = PeregrineConfig.parse(text, file: file, diagnostics: &diagnostics)
        return diagnostics
    }

    /// A temporary file, removed by the caller.
    func temporaryFile(_ bytes: [UInt8]) -> String {
        let path = NSTemporaryDirectory() + "peregrine-diag-\(UInt32.random(in: 0...UInt32.max)).conf"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test func everyErrorIsReportedInFileOrder() {
        let text = """
        smtp-listner 127.0.0.1:25
        <domain a.test>
            max-smtp-out lots
            max-msg-rate fast
            frob 1
        </domain>
        <source 127.0.0.0/8>
            smtp-service maybe
            smtp-service no
        </source>
        <virtual-mta-pool p>
            virtual-mta nowhere
            vmta x
        </virtual-mta-pool>
        <smtp-pattern-list l>
            reply /x/ explode
            reply /y/ mode=backoff
        </smtp-pattern-list>
        <domain b.test>
            smtp-pattern-list missing
        </domain>
        threads 0
        </virtual-mta>
        """
        let lines = diagnose(text).sortedErrors.map(\.description)
        #expect(lines == [
            "d.conf:1: unknown directive 'smtp-listner'",
            "d.conf:3: max-smtp-out: 'lots' is not a whole number",
            "d.conf:4: max-msg-rate: 'fast' is not a rate (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)",
            "d.conf:5: unknown directive 'frob' in <domain a.test>",
            "d.conf:8: smtp-service: 'maybe' is not yes or no",
            "d.conf:9: smtp-service is already set in this block at line 8",
            "d.conf:12: virtual-mta 'nowhere' is not defined (pools list <virtual-mta> names)",
            "d.conf:13: unknown directive 'vmta' in <virtual-mta-pool p> (expected: virtual-mta NAME)",
            "d.conf:16: reply: unknown action 'explode' (expected mode=backoff, mode=normal, suspend=DURATION, disable-source-ip[=DURATION], bounce)",
            "d.conf:20: smtp-pattern-list 'missing' is not defined",
            "d.conf:22: threads: 0 is out of range 1...1024",
            "d.conf:23: </virtual-mta> closes no open block",
        ])
    }

    /// The throwing entry point still throws the first of them in file order
    /// (reload, tests, fuzzing), even when a later check found it.
    @Test func throwingParseThrowsTheFirstInFileOrder() {
        let text = "<domain $nomacro>\n</domain>\nthreads x\n"
        #expect(diagnose(text).errors.map(\.location.line) == [3, 1])
        #expect(throws: ConfigError(ConfigLocation(file: "d.conf", line: 1), "<domain $nomacro>: domain-macro 'nomacro' is not defined")) {
            _ = try PeregrineConfig.parse(text, file: "d.conf")
        }
    }

    /// Structural mistakes do not end the check: a mismatched closing tag closes
    /// the block it names, an unclosed block is closed at the end, a bad line is
    /// skipped, and what they hold is still checked.
    @Test func structuralErrorsRecoverAndGoOn() {
        let lines = diagnose("""
        <domain a.test>
            <source 0/0>
            max-smtp-out x
        </domain>
        <domain c.test
            max-smtp-out z
        </domain>
        threads "unterminated
        <domain b.test>
            max-smtp-out y
        """).sortedErrors.map(\.description)
        // max-smtp-out z sits in the malformed <domain c.test: dropped, not reported;
        // max-smtp-out x sits in a block that is refused as a whole.
        #expect(lines == [
            "d.conf:2: block <source 0/0> is not allowed inside <domain a.test>",
            "d.conf:4: </domain> does not match <source 0/0> opened at line 2",
            "d.conf:5: block tag is missing its closing '>'",
            "d.conf:8: unterminated quoted value (missing closing '\"')",
            "d.conf:9: <domain b.test> is not closed (missing </domain>)",
            "d.conf:10: max-smtp-out: 'y' is not a whole number",
        ])
    }

    @Test func eachLineNamesItsDirective() {
        // The message of a block's tag error names the block.
        #expect(diagnose("<domain $9x>\n</domain>").sortedErrors.map(\.description) == ["d.conf:1: <domain $9x>: '$9x' is not a macro reference"])
        let error = ConfigError(ConfigLocation(file: "f", line: 3), "needs a value", directive: "spool")
        #expect(error.description == "f:3: spool: needs a value")
        #expect(ConfigError(ConfigLocation(file: "f", line: 3), "spool needs a value", directive: "spool").description == "f:3: spool needs a value")
    }

    @Test func missingFileSaysWhy() {
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.load(path: "/nonexistent/peregrine.conf", diagnostics: &d)
        #expect(d.errors.map(\.description) == ["/nonexistent/peregrine.conf: cannot open the config file: No such file or directory (ENOENT)"])
    }

    @Test func directoryInsteadOfFileSaysWhy() {
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.load(path: "/tmp", diagnostics: &d)
        #expect(d.errors.map(\.description) == ["/tmp: cannot read the config file: Is a directory (EISDIR)"])
    }

    /// Invalid UTF-8 is reported at its own line (not line 1), and the rest of the file is still checked.
    @Test func invalidUTF8IsReportedAtItsLine() {
        let path = temporaryFile(Array("spool /s\nthreads 2\nhost-name a\u{e9}\n".utf8) + [0x68, 0x6F, 0x73, 0x74, 0x20, 0xFF, 0xFE, 0x0A] + Array("threads x\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = ConfigDiagnostics()
        _ = PeregrineConfig.load(path: path, diagnostics: &d)
        #expect(d.sortedErrors.map(\.description) == [
            "\(path):3: host-name: 'aé' is not a domain name",
            "\(path):4: line is not valid UTF-8 (byte 6 is not part of a UTF-8 character)",
            "\(path):5: threads is already set at line 2",
        ])
    }

    @Test func reportPutsErrorsFirstAndStrictMakesWarningsErrors() throws {
        let path = temporaryFile(Array("spool /s\n<domain a.test>\n  max-smtp-out x\n</domain>\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let plain = ConfigReport.check(path: path, strict: false).report
        #expect(plain.errors.map(\.location.line) == [3])
        #expect(plain.lines.count == 1) // warnings about defaults only once the config loads

        let warningsOnly = temporaryFile(Array("spool /s\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: warningsOnly) }
        let lenient = ConfigReport.check(path: warningsOnly, strict: false).report
        #expect(!lenient.hasErrors)
        #expect(lenient.lines == ["\(warningsOnly): warning: no smtp-listener: the daemon will listen on 0.0.0.0:25 (every IPv4 address); add e.g. 'smtp-listener 127.0.0.1:25' to choose"])
        let strict = ConfigReport.check(path: warningsOnly, strict: true).report
        #expect(strict.hasErrors && strict.warnings.isEmpty && strict.errors.count == 1)

        let object = try #require(try JSONSerialization.jsonObject(with: Data(plain.json.utf8)) as? [String: Any])
        #expect(object["ok"] as? Bool == false)
        let errors = try #require(object["errors"] as? [[String: Any]])
        #expect(errors.count == 1)
        #expect(errors.first?["line"] as? Int == 3)
        #expect(errors.first?["directive"] as? String == "max-smtp-out")
        #expect(errors.first?["file"] as? String == path)
    }

    /// Located warnings print as `file:line: warning: directive: message`.
    @Test func warningLinesNameFileLineAndDirective() {
        var d = ConfigDiagnostics()
        let node = ConfigNode(kind: .directive, name: "sync-interval", arguments: ["1s"], rawArguments: "1s",
                              location: ConfigLocation(file: "w.conf", line: 4))
        d.warn(node, "not applicable to Peregrine")
        let report = ConfigReport(file: "w.conf", errors: [], warnings: d.sortedWarnings)
        #expect(report.lines == ["w.conf:4: warning: sync-interval: not applicable to Peregrine"])
    }
}
