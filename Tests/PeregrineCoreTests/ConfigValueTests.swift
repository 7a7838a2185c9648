import Testing
@testable import PeregrineConfig

@Suite struct ConfigValueTests {
    func message(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let error as ConfigValueError { return error.message } catch { return "unexpected \(error)" }
    }

    @Test func durations() throws {
        #expect(try ConfigValue.duration("90s") == .seconds(90))
        #expect(try ConfigValue.duration("10m") == .seconds(600))
        #expect(try ConfigValue.duration("1h30m") == .seconds(5400))
        #expect(try ConfigValue.duration("4d12h") == .seconds(4 * 86400 + 12 * 3600))
        #expect(try ConfigValue.duration("250ms") == .milliseconds(250))
        #expect(try ConfigValue.duration("30") == .seconds(30))
        #expect(try ConfigValue.duration("1W") == .seconds(7 * 86400))
        #expect(try ConfigValue.durationOrNever("never") == nil)
        #expect(try ConfigValue.durationOrNever("1h") == .seconds(3600))
        #expect(message { _ = try ConfigValue.duration("10x") } == "'10x' is not a duration: unknown unit 'x' (use ms, s, m, h, d, w)")
        #expect(message { _ = try ConfigValue.duration("") } == "empty duration")
        #expect(message { _ = try ConfigValue.duration("h") } == "'h' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(message { _ = try ConfigValue.duration("10 5m") } == "'10 5m' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(message { _ = try ConfigValue.duration("99999999999999d") } == "'99999999999999d' is too long a duration")
        #expect(message { _ = try ConfigValue.duration("never") } == "'never' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h)")
        #expect(message { _ = try ConfigValue.durationOrNever("soon") } == "'soon' is not a duration (expected e.g. 90s, 10m, 1h30m, 4d12h), or never")
        #expect(Duration.seconds(4 * 86400 + 12 * 3600).configText == "4d12h")
        #expect(Duration.seconds(90).configText == "1m30s")
        #expect(Duration.milliseconds(1500).nanoseconds == 1_500_000_000)
    }

    @Test func rates() throws {
        #expect(try ConfigValue.rate("unlimited") == .unlimited)
        #expect(try ConfigValue.rate("1000/h") == .limited(count: 1000, per: .seconds(3600)))
        #expect(try ConfigValue.rate("50/m") == .limited(count: 50, per: .seconds(60)))
        #expect(try ConfigValue.rate("10/s") == .limited(count: 10, per: .seconds(1)))
        #expect(try ConfigValue.rate("100/10m") == .limited(count: 100, per: .seconds(600)))
        #expect(try ConfigValue.rate("1/90s").emissionIntervalNanos == 90_000_000_000)
        #expect(try ConfigValue.rate("10/s").emissionIntervalNanos == 100_000_000)
        #expect(Rate.unlimited.emissionIntervalNanos == nil)
        #expect(try ConfigValue.rate("100/10m").description == "100/10m")
        #expect(message { _ = try ConfigValue.rate("1000") } == "'1000' is not a rate (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(message { _ = try ConfigValue.rate("x/h") } == "'x/h' is not a rate: 'x' is not a count (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(message { _ = try ConfigValue.rate("10/y") } == "'10/y' is not a rate: 'y' is not an interval (expected COUNT/INTERVAL such as 1000/h, 50/m, 100/10m, or unlimited)")
        #expect(message { _ = try ConfigValue.rate("0/h") } == "'0/h': a rate needs a count of at least 1 (pause the queue to stop it)")
        #expect(message { _ = try ConfigValue.rate("5/0s") } == "'5/0s': the interval must be longer than zero")
    }

    @Test func sizes() throws {
        #expect(try ConfigValue.size("1048576") == 1_048_576)
        #expect(try ConfigValue.size("100k") == 102_400)
        #expect(try ConfigValue.size("20M") == 20 << 20)
        #expect(try ConfigValue.size("20MB") == 20 << 20)
        #expect(try ConfigValue.size("1G") == 1 << 30)
        #expect(try ConfigValue.size("512b") == 512)
        #expect(message { _ = try ConfigValue.size("20X") } == "'20X' is not a size: unknown unit 'X' (use bytes, k, M, G)")
        #expect(message { _ = try ConfigValue.size("M") } == "'M' is not a size (expected bytes or e.g. 100k, 20M, 1G)")
        #expect(message { _ = try ConfigValue.size("-5") } == "'-5' is not a size (expected bytes or e.g. 100k, 20M, 1G)")
        #expect(message { _ = try ConfigValue.size("999999999999999G") } == "'999999999999999G' is too large a size")
    }

    @Test func booleansIntegersPorts() throws {
        #expect(try ConfigValue.bool("yes") == true)
        #expect(try ConfigValue.bool("No") == false)
        #expect(try ConfigValue.bool("true") == true)
        #expect(try ConfigValue.bool("off") == false)
        #expect(message { _ = try ConfigValue.bool("maybe") } == "'maybe' is not yes or no")
        #expect(try ConfigValue.integer("50", in: 0...100) == 50)
        #expect(message { _ = try ConfigValue.integer("101", in: 0...100) } == "101 is out of range 0...100")
        #expect(message { _ = try ConfigValue.integer("-1", in: 0...100) } == "'-1' is not a whole number")
        #expect(try ConfigValue.port("25") == 25)
        #expect(message { _ = try ConfigValue.port("0") } == "'0' is not a port number (1-65535)")
        #expect(message { _ = try ConfigValue.port("70000") } == "'70000' is not a port number (1-65535)")
    }

    @Test func retrySchedules() throws {
        let s = try ConfigValue.retrySchedule("10m,20m,1h")
        #expect(s.intervals == [.seconds(600), .seconds(1200), .seconds(3600)])
        #expect(s.delay(afterFailures: 1) == .seconds(600))
        #expect(s.delay(afterFailures: 2) == .seconds(1200))
        #expect(s.delay(afterFailures: 3) == .seconds(3600))
        #expect(s.delay(afterFailures: 50) == .seconds(3600))
        #expect(s.delay(afterFailures: 0) == .seconds(600))
        #expect(s.description == "10m,20m,1h")
        #expect(try ConfigValue.retrySchedule("5m").intervals == [.seconds(300)])
        #expect(try ConfigValue.retrySchedule("5m, 10m").intervals == [.seconds(300), .seconds(600)])
        #expect(message { _ = try ConfigValue.retrySchedule("10m,,1h") } == "'10m,,1h': empty entry 2 in the retry list")
        #expect(message { _ = try ConfigValue.retrySchedule("10m,0s") } == "'10m,0s': a retry interval must be longer than zero")
        #expect(message { _ = try ConfigValue.retrySchedule("10m,1y") } == "'1y' is not a duration: unknown unit 'y' (use ms, s, m, h, d, w)")
    }

    @Test func networks() throws {
        let all = try ConfigValue.network("0/0")
        #expect(all.isIPv4 && all.prefixLength == 0)
        #expect(all.contains(ip: "203.0.113.9"))
        #expect(!all.contains(ip: "::1"))
        let loop = try ConfigValue.network("127.0.0.0/8")
        #expect(loop.contains(ip: "127.1.2.3"))
        #expect(loop.contains(ip: "::ffff:127.0.0.1"))
        #expect(!loop.contains(ip: "128.0.0.1"))
        #expect(!loop.contains(ip: "not-an-ip"))
        #expect(try ConfigValue.network("10/8").description == "10.0.0.0/8")
        #expect(try ConfigValue.network("192.168/16").description == "192.168.0.0/16")
        #expect(try ConfigValue.network("127.0.0.1/8").description == "127.0.0.0/8")
        #expect(try ConfigValue.network("192.0.2.7").prefixLength == 32)
        let v6 = try ConfigValue.network("2001:db8::/32")
        #expect(v6.contains(ip: "2001:db8:1::5"))
        #expect(!v6.contains(ip: "2001:db9::1"))
        #expect(!v6.contains(ip: "10.0.0.1"))
        #expect(v6.description == "2001:db8::/32")
        #expect(try ConfigValue.network("::1").prefixLength == 128)
        #expect(try ConfigValue.network("10.0.0.0/9").contains(ip: "10.127.255.255"))
        #expect(!(try ConfigValue.network("10.0.0.0/9").contains(ip: "10.128.0.0")))
        #expect(message { _ = try ConfigValue.network("10.0.0.0/33") } == "'10.0.0.0/33' is not a network: prefix length '33' must be 0...32")
        #expect(message { _ = try ConfigValue.network("::/129") } == "'::/129' is not a network: prefix length '129' must be 0...128")
        #expect(message { _ = try ConfigValue.network("example.com/8") } == "'example.com/8' is not a network: 'example.com' is not an IPv4 or IPv6 address")
        #expect(message { _ = try ConfigValue.network("1/2/3") } == "'1/2/3' is not a network (expected CIDR such as 127.0.0.0/8, 0/0, ::1/128)")
    }

    @Test func hostPorts() throws {
        #expect(try ConfigValue.hostPort("[127.0.1.1]:2525") == HostPort(host: "127.0.1.1", port: 2525, isLiteral: true))
        #expect(try ConfigValue.hostPort("mx.example.com") == HostPort(host: "mx.example.com", port: nil, isLiteral: false))
        #expect(try ConfigValue.hostPort("mx.example.com:2525") == HostPort(host: "mx.example.com", port: 2525))
        #expect(try ConfigValue.hostPort("[::1]:25") == HostPort(host: "::1", port: 25, isLiteral: true))
        #expect(try ConfigValue.hostPort("::1") == HostPort(host: "::1"))
        #expect(try ConfigValue.hostPort("0/0:25") == HostPort(host: "0/0", port: 25))
        #expect(try ConfigValue.hostPort("0/0:25").socketAddress(defaultPort: 1).description == "0.0.0.0:25")
        #expect(try ConfigValue.hostPort("[::1]:25").socketAddress(defaultPort: 1).description == "[::1]:25")
        #expect(try ConfigValue.hostPort("127.0.0.1").socketAddress(defaultPort: 53).description == "127.0.0.1:53")
        #expect(HostPort(host: "127.0.1.1", port: 2525, isLiteral: true).description == "[127.0.1.1]:2525")
        #expect(message { _ = try ConfigValue.hostPort("[::1") } == "'[::1': missing ']'")
        #expect(message { _ = try ConfigValue.hostPort("[::1]x") } == "'[::1]x': unexpected 'x' after ']'")
        #expect(message { _ = try ConfigValue.hostPort(":25") } == "':25': missing host")
        #expect(message { _ = try ConfigValue.hostPort("a b:25") } == "'a b:25': 'a b' is not a host name or IP address")
        #expect(message { _ = try ConfigValue.hostPort("h:99999") } == "'99999' is not a port number (1-65535)")
        #expect(message { _ = try ConfigValue.hostPort("mx.example.com").socketAddress(defaultPort: 25) } == "'mx.example.com' is not a numeric IPv4 or IPv6 address")
    }
}
