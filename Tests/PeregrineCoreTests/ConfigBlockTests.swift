import Foundation
import Testing
import PeregrineIO
@testable import PeregrineConfig

@Suite struct ConfigBlockTests {
    func parseError(_ text: String) -> String? {
        do {
            _ = try BlockConfig.parse(text, file: "t.conf")
            return nil
        } catch {
            return error.description
        }
    }

    @Test func parsesDirectivesBlocksAndNesting() throws {
        let text = """
        # a comment
        spool /var/spool/peregrine   # trailing comment
        SMTP-Listener 0/0:25

        <virtual-mta vmta1>
            smtp-source-host 127.0.0.2 mta1.example.com
            <domain gmail.com>
                max-smtp-out 5
            </domain>
        </virtual-mta>
        <smtp-pattern-list p>
            reply /421 .* Please try again later/ mode=backoff
            reply /a #not-a-comment b/i bounce
        </smtp-pattern-list>
        route "[127.0.1.1]:2525"
        note "say \\"hi\\" \\\\ there"
        url http://x.example/a#frag
        """
        let nodes = try BlockConfig.parse(text, file: "t.conf")
        #expect(nodes.count == 7)
        #expect(nodes[0].name == "spool")
        #expect(nodes[0].arguments == ["/var/spool/peregrine"])
        #expect(nodes[0].rawArguments == "/var/spool/peregrine")
        #expect(nodes[0].location == ConfigLocation(file: "t.conf", line: 2))
        #expect(nodes[1].name == "smtp-listener")
        #expect(nodes[1].location.line == 3)

        let vmta = nodes[2]
        #expect(vmta.isBlock)
        #expect(vmta.name == "virtual-mta")
        #expect(vmta.arguments == ["vmta1"])
        #expect(vmta.location.line == 5)
        #expect(vmta.children.count == 2)
        #expect(vmta.children[0].arguments == ["127.0.0.2", "mta1.example.com"])
        let domain = vmta.children[1]
        #expect(domain.isBlock && domain.name == "domain" && domain.arguments == ["gmail.com"])
        #expect(domain.children.first?.name == "max-smtp-out")
        #expect(domain.children.first?.location.line == 8)

        let patterns = nodes[3]
        #expect(patterns.children[0].arguments == ["/421 .* Please try again later/", "mode=backoff"])
        #expect(patterns.children[1].arguments == ["/a #not-a-comment b/i", "bounce"])
        #expect(patterns.children[1].rawArguments == "/a #not-a-comment b/i bounce")

        #expect(nodes[4].arguments == ["[127.0.1.1]:2525"])
        #expect(nodes[5].arguments == ["say \"hi\" \\ there"])
        let last = try BlockConfig.parse("url http://x.example/a#frag", file: "u")
        #expect(last[0].arguments == ["http://x.example/a#frag"])
    }

    @Test func blockTagForms() throws {
        let nodes = try BlockConfig.parse("<domain * >\n</domain >\n<Source 0/0>\n</SOURCE>\n<acct-file \"/tmp/a b.csv\">\n</acct-file>\r\n<bounce-category-patterns>\n</bounce-category-patterns>", file: "f")
        #expect(nodes.map(\.name) == ["domain", "source", "acct-file", "bounce-category-patterns"])
        #expect(nodes[0].arguments == ["*"])
        #expect(nodes[1].arguments == ["0/0"])
        #expect(nodes[2].arguments == ["/tmp/a b.csv"])
        #expect(nodes[3].arguments.isEmpty)
        #expect(nodes[2].displayName == "<acct-file /tmp/a b.csv>")
    }

    @Test func structuralErrorsNameFileAndLine() {
        #expect(parseError("<domain a>\nx 1\n") == "t.conf:1: <domain a> is not closed (missing </domain>)")
        #expect(parseError("x 1\n</domain>") == "t.conf:2: </domain> closes no open block")
        #expect(parseError("<domain a>\n</source>") == "t.conf:2: </source> does not match <domain a> opened at line 1")
        #expect(parseError("<domain a>\n</domain a>") == "t.conf:2: closing tag </domain> takes no arguments")
        #expect(parseError("<domain a\n") == "t.conf:1: block tag is missing its closing '>'")
        #expect(parseError("<>") == "t.conf:1: empty block tag")
        #expect(parseError("</>") == "t.conf:1: empty block tag")
        #expect(parseError("<domain a> x") == "t.conf:1: unexpected text after '>' in block tag")
        #expect(parseError("<9x>") == "t.conf:1: '9x' is not a block name")
        #expect(parseError("a \"b") == "t.conf:1: unterminated quoted value (missing closing '\"')")
        #expect(parseError("a \"b\"c") == "t.conf:1: unexpected 'c' right after a quoted value")
        #expect(parseError("\"\" x") == "t.conf:1: empty directive name")
        #expect(parseError("\"a\" x") == "t.conf:1: a directive name cannot be quoted (\"a\")")
        #expect(parseError("\n\n=x 1") == "t.conf:3: '=x' is not a directive name")
    }

    @Test func nodeValueHelpersReportLocation() throws {
        let nodes = try BlockConfig.parse("a\nb 1 2\nc x\n<d>\n<e>\n</e>\n</d>", file: "v.conf")
        #expect(throws: ConfigError(ConfigLocation(file: "v.conf", line: 1), "a needs a value")) { try nodes[0].singleArgument() }
        #expect(throws: ConfigError(ConfigLocation(file: "v.conf", line: 2), "b takes one value, got 2: 1 2")) { try nodes[1].singleArgument() }
        #expect(throws: ConfigError(ConfigLocation(file: "v.conf", line: 3), "c: 'x' is not a whole number")) {
            try nodes[2].value { t throws(ConfigValueError) in try ConfigValue.integer(t, in: 0...5) }
        }
        #expect(throws: ConfigError(ConfigLocation(file: "v.conf", line: 5), "block <e> is not allowed inside <d>")) { try nodes[3].directivesOnly() }
        #expect(throws: ConfigError(ConfigLocation(file: "v.conf", line: 2), "b expects NAME, got '1 2'")) {
            try nodes[1].arguments(count: 1...1, usage: "NAME")
        }
    }

    @Test func loadReportsInvalidUTF8() throws {
        let path = "/tmp/peregrine-block-utf8-\(UInt32.random(in: 0...UInt32.max)).conf"
        #expect(FileManager.default.createFile(atPath: path, contents: Data([0x61, 0x0A, 0x61, 0x20, 0xFF, 0xFE, 0x0A])))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ConfigError(ConfigLocation(file: path, line: 2), "line is not valid UTF-8 (byte 3 is not part of a UTF-8 character)")) {
            try BlockConfig.load(path: path)
        }
    }

    @Test func loadReportsUnreadableFile() {
        #expect(throws: ConfigError(ConfigLocation(file: "/nonexistent/x.conf", line: 0),
                                    "cannot open the config file: No such file or directory (ENOENT)")) {
            try BlockConfig.load(path: "/nonexistent/x.conf")
        }
    }
}
