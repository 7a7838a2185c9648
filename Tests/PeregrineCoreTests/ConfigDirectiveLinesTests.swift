import Testing
@testable import PeregrineConfig
@testable import PeregrineDaemon

/// The blocks that refuse a directive set twice, through the one check they
/// share (ConfigDirectiveLines): the error names both lines, the repeatable
/// directives add up, and the first setting is the one kept.
@Suite struct ConfigDirectiveLinesTests {
    func errors(_ text: String) -> [String] {
        var diagnostics = ConfigDiagnostics()
        _ = PeregrineConfig.parse(text, file: "r.conf", diagnostics: &diagnostics)
        return diagnostics.sortedErrors.map(\.description)
    }

    @Test func theCheckOnItsOwn() throws {
        let nodes = try BlockConfig.parse("<x>\n  a 1\n  b 1\n  a 2\n  b 2\n  b 3\n</x>", file: "r.conf")
        var lines = ConfigDirectiveLines(repeatable: ["b"])
        var diagnostics = ConfigDiagnostics()
        let kept = nodes[0].children.filter { lines.firstOccurrence($0, diagnostics: &diagnostics) }
        #expect(kept.map(\.name) == ["a", "b", "b", "b"])
        #expect(diagnostics.errors.map(\.description) == ["r.conf:4: a is already set in this block at line 2"])
        #expect(lines.contains("a") && !lines.contains("b"))
    }

    @Test func webhookRefusesASecondURL() {
        #expect(errors("<webhook w>\n  url http://127.0.0.1:9/a\n  url http://127.0.0.1:9/b\n</webhook>")
                == ["r.conf:3: url is already set in this block at line 2"])
    }

    @Test func accountingFileTakesRecordFieldsMoreThanOnce() {
        #expect(errors("<acct-file /tmp/r.csv>\n  record-fields delivery timeLogged,orig,rcpt\n  record-fields b timeLogged,orig,rcpt,bounceCat\n</acct-file>") == [])
    }
}
