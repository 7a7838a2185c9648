import Testing
@testable import PeregrineDaemon

@Suite struct ConfigPeregrineErrorTests {
    static let base = """
    <virtual-mta vmta1>
        smtp-source-host 127.0.0.2 mta1.example.com
    </virtual-mta>
    <smtp-pattern-list receivers>
        reply /x/ mode=backoff
    </smtp-pattern-list>
    domain-macro yahoo yahoo.com
    """

    /// Parses `base` + `extra`; extra starts at line 8.
    func error(_ extra: String) -> String? {
        do {
            _ = try PeregrineConfig.parse(Self.base + "\n" + extra, file: "e.conf")
            return nil
        } catch {
            return error.description
        }
    }

    @Test func baseIsValid() {
        #expect(error("") == nil)
    }

    /// Found by the config fuzz target: a token with a NUL byte from a damaged
    /// file was quoted raw, and the printed line stopped at the NUL.
    @Test func controlCharactersInAQuotedTokenArePrintable() throws {
        let line = try #require(error("fro\u{0}b\r\u{1B}[2J yes"))
        #expect(!line.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F })
        #expect(line.contains("fro\\u{0}b"))
        #expect(line.hasPrefix("e.conf:8: "))
    }

    @Test func unknownAndMisplacedDirectives() {
        #expect(error("frobnicate yes") == "e.conf:8: unknown directive 'frobnicate'")
        #expect(error("max-smtp-out 5") == "e.conf:8: max-smtp-out is not allowed at the top level (it belongs in <domain>)")
        #expect(error("always-allow-relaying yes") == "e.conf:8: always-allow-relaying is not allowed at the top level (it belongs in <source>)")
        #expect(error("reply /x/ bounce") == "e.conf:8: reply is not allowed at the top level (it belongs in <smtp-pattern-list>)")
        #expect(error("<frob x>\n</frob>") == "e.conf:8: unknown block <frob>")
        #expect(error("<domain x.com>\n  frob 1\n</domain>") == "e.conf:9: unknown directive 'frob' in <domain x.com>")
        #expect(error("<domain x.com>\n  always-allow-relaying yes\n</domain>") == "e.conf:9: unknown directive 'always-allow-relaying' in <domain x.com>")
        #expect(error("<source 0/0>\n  max-smtp-out 5\n</source>") == "e.conf:9: unknown directive 'max-smtp-out' in <source 0/0>")
        #expect(error("<virtual-mta v>\n  max-smtp-out 0\n</virtual-mta>")?.hasPrefix("e.conf:9: max-smtp-out") == true)
        #expect(error("<virtual-mta v>\n  max-msg-rate 5/h\n</virtual-mta>") == "e.conf:9: unknown directive 'max-msg-rate' in <virtual-mta v>")
        #expect(error("<virtual-mta v>\n  <source 0/0>\n  </source>\n</virtual-mta>") == "e.conf:9: block <source 0/0> is not allowed inside <virtual-mta v>")
        #expect(error("<virtual-mta-pool p>\n  vmta vmta1\n</virtual-mta-pool>") == "e.conf:9: unknown directive 'vmta' in <virtual-mta-pool p> (expected: virtual-mta NAME)")
        #expect(error("<acct-file /tmp/a.csv>\n  max-smtp-out 1\n</acct-file>") == "e.conf:9: unknown directive 'max-smtp-out' in <acct-file /tmp/a.csv> (max-smtp-out belongs in <domain>)")
        #expect(error("<domain x.com>\n  <domain y.com>\n  </domain>\n</domain>") == "e.conf:9: block <domain y.com> is not allowed inside <domain x.com>")
        #expect(error("<source 0/0>\n  <domain y.com>\n  </domain>\n</source>") == "e.conf:9: block <domain y.com> is not allowed inside <source 0/0>")
    }

    @Test func badGlobalValues() {
        #expect(error("smtp-listener mx.example.com:25") == "e.conf:8: smtp-listener: 'mx.example.com' is not a numeric IPv4 or IPv6 address")
        #expect(error("smtp-listener 0/0:0") == "e.conf:8: smtp-listener: '0' is not a port number (1-65535)")
        #expect(error("smtp-listener") == "e.conf:8: smtp-listener needs a value")
        #expect(error("http-mgmt-port 0") == "e.conf:8: http-mgmt-port: '0' is not a port number (1-65535)")
        #expect(error("http-mgmt-port localhost") == "e.conf:8: http-mgmt-port: expected PORT or ADDRESS:PORT, got 'localhost'")
        #expect(error("http-mgmt-port 8080\nhttp-mgmt-port 8081") == "e.conf:9: http-mgmt-port is already set at line 8")
        #expect(error("http-access 0/0 root") == "e.conf:8: http-access: unknown access level 'root' (expected admin, monitor or none)")
        #expect(error("http-access 0/0") == "e.conf:8: http-access expects CIDR admin|monitor|none, got '0/0'")
        #expect(error("http-access 300.0.0.0/8 admin") == "e.conf:8: http-access: '300.0.0.0/8' is not a network: '300.0.0.0' is not an IPv4 or IPv6 address")
        #expect(error("spool") == "e.conf:8: spool needs a value")
        #expect(error("spool /a /b") == "e.conf:8: spool takes one value, got 2: /a /b")
        #expect(error("io-backend kqueue") == "e.conf:8: io-backend: unknown backend 'kqueue' (expected one of: io_uring, epoll, dispatch)")
        #expect(error("threads 0") == "e.conf:8: threads: 0 is out of range 1...1024")
        #expect(error("threads many") == "e.conf:8: threads: 'many' is not a whole number")
        #expect(error("dns-server [::1") == "e.conf:8: dns-server: '[::1': missing ']'")
        #expect(error("dns-server resolver.example:53") == "e.conf:8: dns-server: 'resolver.example' is not a numeric IPv4 or IPv6 address")
        #expect(error("domain-macro m") == "e.conf:8: domain-macro expects NAME domain,domain,…, got 'm'")
        #expect(error("domain-macro yahoo aol.com") == "e.conf:8: domain-macro yahoo is already defined")
        #expect(error("domain-macro m a..b") == "e.conf:8: domain-macro: 'a..b' is not a domain name")
        #expect(error("domain-macro 9m a.com") == "e.conf:8: domain-macro: '9m' is not a macro name")
        #expect(error("domain-macro m ,") == "e.conf:8: domain-macro m lists no domains")
        #expect(error("host-name bad_host!") == "e.conf:8: host-name: 'bad_host!' is not a domain name")
        #expect(error("postmaster nobody") == "e.conf:8: postmaster: 'nobody' is not an email address")
    }

    @Test func badBlockArgumentsAndDuplicates() {
        #expect(error("<source>\n</source>") == "e.conf:8: <source> expects one network, as in <source 127.0.0.0/8>, or a name, as in <source {auth}>, got ''")
        #expect(error("<source example.com>\n</source>") == "e.conf:8: <source example.com>: 'example.com' is not a network: 'example.com' is not an IPv4 or IPv6 address")
        #expect(error("<source 0/0>\n</source>\n<source 0/0>\n</source>") == "e.conf:10: <source 0/0> is already defined at line 8")
        #expect(error("<domain>\n</domain>") == "e.conf:8: <domain> expects one domain, *, *.DOMAIN, [*.]DOMAIN or $macro, as in <domain gmail.com>, got ''")
        #expect(error("<domain a b>\n</domain>") == "e.conf:8: <domain a b> expects one domain, *, *.DOMAIN, [*.]DOMAIN or $macro, as in <domain gmail.com>, got 'a b'")
        #expect(error("<domain bad..name>\n</domain>") == "e.conf:8: <domain bad..name>: 'bad..name' is not a domain name")
        #expect(error("<domain $>\n</domain>") == "e.conf:8: <domain $>: '$' is not a macro reference")
        #expect(error("<domain x.com>\n</domain>\n<domain X.com>\n</domain>") == "e.conf:10: <domain X.com> is already defined at line 8")
        #expect(error("<virtual-mta vmta1>\n</virtual-mta>") == "e.conf:8: <virtual-mta vmta1> is already defined at line 1")
        #expect(error("<virtual-mta v>\n  <domain a.com>\n  </domain>\n  <domain a.com>\n  </domain>\n</virtual-mta>") == "e.conf:11: <domain a.com> is already defined in this virtual-mta at line 9")
        #expect(error("<virtual-mta v>\n  smtp-source-host 127.0.0.9\n</virtual-mta>") == "e.conf:9: smtp-source-host expects IP HOSTNAME, got '127.0.0.9'")
        #expect(error("<virtual-mta v>\n  smtp-source-host mta.example.com 127.0.0.9\n</virtual-mta>") == "e.conf:9: smtp-source-host: 'mta.example.com' is not a numeric IPv4 or IPv6 address")
        #expect(error("<virtual-mta v>\n  smtp-source-host 127.0.0.9 a..b\n</virtual-mta>") == "e.conf:9: smtp-source-host: 'a..b' is not a domain name")
        #expect(error("<virtual-mta-pool p>\n</virtual-mta-pool>") == "e.conf:8: <virtual-mta-pool p> lists no virtual-mta")
        #expect(error("<virtual-mta-pool p>\n  virtual-mta vmta1\n  virtual-mta VMTA1\n</virtual-mta-pool>") == "e.conf:10: virtual-mta vmta1 is listed twice in this pool")
        #expect(error("<smtp-pattern-list receivers>\n</smtp-pattern-list>") == "e.conf:8: <smtp-pattern-list receivers> is already defined at line 4")
        #expect(error("<acct-file>\n</acct-file>") == "e.conf:8: <acct-file> expects one file path, as in <acct-file /var/log/peregrine/acct.csv>, got ''")
        #expect(error("<bounce-category-patterns>\n</bounce-category-patterns>\n<bounce-category-patterns>\n</bounce-category-patterns>") == "e.conf:10: <bounce-category-patterns> is already defined at line 8")
    }

    @Test func badBlockValues() {
        func inDomain(_ line: String) -> String? { error("<domain x.com>\n  \(line)\n</domain>") }
        #expect(inDomain("max-smtp-out 0") == "e.conf:9: max-smtp-out: 0 is out of range 1...100000")
        #expect(inDomain("max-smtp-out") == "e.conf:9: max-smtp-out needs a value")
        #expect(inDomain("max-msg-per-connection -1") == "e.conf:9: max-msg-per-connection: '-1' is not a whole number")
        #expect(inDomain("max-msg-rate fast") == "e.conf:9: max-msg-rate: 'fast' is not a rate (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(inDomain("max-connect-rate 5/q") == "e.conf:9: max-connect-rate: '5/q' is not a rate: 'q' is not an interval (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(inDomain("max-rcpt-per-transaction 0") == "e.conf:9: max-rcpt-per-transaction: 0 is out of range 1...100000")
        #expect(inDomain("retry-after 10m,,1h") == "e.conf:9: retry-after: '10m,,1h': empty entry 2 in the retry list")
        #expect(inDomain("bounce-after forever") == "e.conf:9: bounce-after: 'forever' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(inDomain("route [x") == "e.conf:9: route: '[x': missing ']'")
        #expect(inDomain("use-starttls perhaps") == "e.conf:9: use-starttls: 'perhaps' is not yes or no")
        #expect(inDomain("require-starttls 2") == "e.conf:9: require-starttls: '2' is not yes or no")
        #expect(inDomain("smtp-pattern-list a b") == "e.conf:9: smtp-pattern-list takes one value, got 2: a b")
        // 0 is PowerMTA's "deliver nothing" (PowerMTARoutingDirectiveTests); its interval must still be one.
        #expect(inDomain("backoff-max-msg-rate 0/h") == nil)
        #expect(inDomain("backoff-max-msg-rate 0/q") == "e.conf:9: backoff-max-msg-rate: '0/q' is not a rate: 'q' is not an interval (0, 0/h: deliver nothing; else COUNT/INTERVAL such as 1000/h)")
        #expect(inDomain("backoff-max-smtp-out none") == "e.conf:9: backoff-max-smtp-out: 'none' is not a whole number")
        #expect(inDomain("backoff-max-connect-rate x") == "e.conf:9: backoff-max-connect-rate: 'x' is not a rate (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(inDomain("backoff-retry-after 0s") == "e.conf:9: backoff-retry-after: '0s': a retry interval must be longer than zero")
        #expect(inDomain("backoff-to-normal-after later") == "e.conf:9: backoff-to-normal-after: 'later' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h), or never")
        #expect(inDomain("backoff-to-normal-after-delivery sure") == "e.conf:9: backoff-to-normal-after-delivery: 'sure' is not yes or no")
        #expect(inDomain("queue-priority 101") == "e.conf:9: queue-priority: 101 is out of range 0...100")
        #expect(inDomain("connect-timeout 1x") == "e.conf:9: connect-timeout: '1x' is not a duration: unknown unit 'x' (use ms, s, m, h, d, w)")
        #expect(inDomain("smtp-greeting-timeout ?") == "e.conf:9: smtp-greeting-timeout: '?' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(inDomain("data-send-timeout -") == "e.conf:9: data-send-timeout: '-' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(inDomain("bounce-upon-no-mx 1") == "e.conf:9: bounce-upon-no-mx: '1' is not yes or no")
        #expect(inDomain("smtp-421-means-mx-unavailable y") == "e.conf:9: smtp-421-means-mx-unavailable: 'y' is not yes or no")
        #expect(error("<domain x.com>\n  max-smtp-out 1\n  max-smtp-out 2\n</domain>") == "e.conf:10: max-smtp-out is already set in this block at line 9")

        func inSource(_ line: String) -> String? { error("<source 0/0>\n  \(line)\n</source>") }
        #expect(inSource("always-allow-relaying maybe") == "e.conf:9: always-allow-relaying: 'maybe' is not yes or no")
        #expect(inSource("smtp-service x") == "e.conf:9: smtp-service: 'x' is not yes or no")
        #expect(inSource("process-x-virtual-mta x") == "e.conf:9: process-x-virtual-mta: 'x' is not yes or no")
        #expect(inSource("process-x-job x") == "e.conf:9: process-x-job: 'x' is not yes or no")
        #expect(inSource("default-virtual-mta") == "e.conf:9: default-virtual-mta needs a value")
        #expect(inSource("max-message-size 20Q") == "e.conf:9: max-message-size: '20Q' is not a size: unknown unit 'Q' (use bytes, k, M, G)")
        #expect(inSource("require-auth x") == "e.conf:9: require-auth: 'x' is not yes or no")
        #expect(inSource("add-received-header x") == "e.conf:9: add-received-header: 'x' is not yes or no")
        #expect(error("<source 0/0>\n  require-auth no\n  require-auth no\n</source>") == "e.conf:10: require-auth is already set in this block at line 9")

        func inAcct(_ line: String) -> String? { error("<acct-file /tmp/a.csv>\n  \(line)\n</acct-file>") }
        #expect(inAcct("records d,x") == "e.conf:9: records: unknown record type 'x' (expected r, d, b, t, tq, f, rb, s)")
        #expect(inAcct("records") == "e.conf:9: records needs a value")
        #expect(inAcct("records ,") == "e.conf:9: records: no record types given (expected e.g. d,b,t)")
        #expect(inAcct("max-size big") == "e.conf:9: max-size: 'big' is not a size (expected bytes or e.g. 100k, 20M, 1G)")
        #expect(inAcct("move-interval 500ms") == "e.conf:9: move-interval must be at least 1s")
        #expect(inAcct("move-interval soon") == "e.conf:9: move-interval: 'soon' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(error("<acct-file /tmp/a.csv>\n  max-size 1M\n  max-size 2M\n</acct-file>") == "e.conf:10: max-size is already set in this block at line 9")
    }

    @Test func brokenReferences() {
        #expect(error("<source 0/0>\n  default-virtual-mta nope\n</source>") == "e.conf:9: default-virtual-mta 'nope' is not a defined virtual-mta or virtual-mta-pool")
        #expect(error("<domain x.com>\n  smtp-pattern-list nope\n</domain>") == "e.conf:9: smtp-pattern-list 'nope' is not defined")
        #expect(error("<virtual-mta v>\n  <domain x.com>\n    smtp-pattern-list nope\n  </domain>\n</virtual-mta>") == "e.conf:10: smtp-pattern-list 'nope' is not defined")
        #expect(error("<domain $gmail>\n</domain>") == "e.conf:8: <domain $gmail>: domain-macro 'gmail' is not defined")
        #expect(error("<virtual-mta-pool p>\n  virtual-mta ghost\n</virtual-mta-pool>") == "e.conf:9: virtual-mta 'ghost' is not defined (pools list <virtual-mta> names)")
        #expect(error("<virtual-mta-pool vmta1>\n  virtual-mta vmta1\n</virtual-mta-pool>") == "e.conf:8: <virtual-mta-pool vmta1> has the same name as a <virtual-mta>")
        // References may point forward: a source naming a pool defined later is fine.
        #expect(error("<source 0/0>\n  default-virtual-mta later\n</source>\n<virtual-mta-pool later>\n  virtual-mta vmta1\n</virtual-mta-pool>\n<domain $yahoo>\n  smtp-pattern-list RECEIVERS\n</domain>") == nil)
    }

    /// Issue 12 item 3 / issue 14: require-auth is enforced; with no
    /// <smtp-user> to log in as it would refuse every client, so it is
    /// refused at load with file:line (DESIGN.md principle 9).
    @Test func requireAuthYesNeedsAnSMTPUser() {
        let e = error("<source 10.0.0.0/8>\n  always-allow-relaying no\n  require-auth yes\n</source>")
        #expect(e == "e.conf:10: require-auth yes, but no <smtp-user> is defined: no client of this source could send")
        #expect(error("<source 10.0.0.0/8>\n  require-auth no\n</source>") == nil)
        #expect(error("<smtp-user a>\n  password x\n</smtp-user>\n<source 10.0.0.0/8>\n  require-auth yes\n</source>") == nil)
    }

    /// Issue 12 item 8: every SMTP client timeout has a directive; zero is refused.
    @Test func clientTimeoutsMustBeLongerThanZero() {
        for name in ["connect-timeout", "smtp-greeting-timeout", "data-send-timeout", "smtp-data-termination-timeout",
                     "smtp-ehlo-timeout", "smtp-mail-from-timeout", "smtp-rcpt-to-timeout", "smtp-data-timeout",
                     "smtp-rset-timeout", "smtp-quit-timeout", "smtp-starttls-timeout"] {
            #expect(error("<domain x.com>\n  \(name) 0s\n</domain>") == "e.conf:9: \(name) must be longer than zero")
            #expect(error("<domain x.com>\n  \(name) 2m\n</domain>") == nil, "\(name)")
        }
        #expect(error("shutdown-timeout soon") == "e.conf:8: shutdown-timeout: 'soon' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
    }
}
