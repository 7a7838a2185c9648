import Testing
@testable import PeregrineConfig
@testable import PeregrineDaemon

/// Numbers in a config that do not fit: each is refused at its `file:line`
/// with the directive named, and the largest accepted ones do not trap later
/// when the rate limiter turns them into nanoseconds.
@Suite struct ConfigOverflowTests {
    func error(_ text: String) -> String? {
        do {
            _ = try PeregrineConfig.parse(text, file: "o.conf")
            return nil
        } catch {
            return error.description
        }
    }

    @Test func oversizedDomainValuesNameTheirLine() {
        let cases: [(String, String)] = [
            ("max-msg-rate", "99999999999999/s"), ("max-msg-rate", "1/99999999999d"),
            ("max-connect-rate", "99999999999999999999/h"), ("backoff-max-msg-rate", "5/99999999999999999999w"),
            ("retry-after", "99999999999d"), ("retry-after", "10m,99999999999999999999s"),
            ("bounce-after", "99999999999d"), ("backoff-to-normal-after", "99999999999999d"),
            ("connect-timeout", "9223372036854775807ms"), ("max-smtp-out", "99999999999999999999"),
            ("max-msg-per-connection", "-1"), ("max-rcpt-per-transaction", "9223372036854775808"),
        ]
        for (directive, value) in cases {
            let text = "# line 1\n<domain example.com>\n    \(directive) \(value)\n</domain>\n"
            let e = error(text)
            #expect(e?.hasPrefix("o.conf:3: \(directive)") == true, "\(directive) \(value): \(e ?? "accepted")")
        }
    }

    @Test func oversizedGlobalAndSourceValuesNameTheirLine() {
        #expect(error("\nthreads 99999999999999999999\n")?.hasPrefix("o.conf:2: threads") == true)
        #expect(error("\nhttp-mgmt-port 99999999999999999999\n")?.hasPrefix("o.conf:2: http-mgmt-port") == true)
        #expect(error("\n<source 0/0>\n  max-message-size 99999999999999999999G\n</source>\n")?.hasPrefix("o.conf:3: max-message-size") == true)
    }

    @Test func extremeAcceptedRatesStayFinite() throws {
        for text in ["999999999999/ms", "1/36500d", "999999999999/36500d"] {
            let rate = try ConfigValue.rate(text)
            var limiter = RateLimiter(rate: rate, burst: Int.max)
            let acquired = limiter.tryAcquire(now: UInt64.max - 1, cost: Int.max)
            #expect(acquired, "\(text)")
            _ = limiter.nextAllowed(now: UInt64.max, cost: Int.max)
            limiter.setRate(rate, burst: Int.max, now: UInt64.max)
        }
    }
}
