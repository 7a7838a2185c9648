import PeregrineIO
#if canImport(Glibc)
import Glibc
#endif

/// What a load run does; parsed from the command line with clear errors.
struct LoadgenOptions {
    var target: SocketAddress = .v4(sockaddr_in())
    var source: SocketAddress?
    var backend: BackendKind = .epoll
    var connections = 16
    /// 0 = unlimited (one connection sends until the run ends).
    var messagesPerConnection = 100
    var pipelining = true
    /// `--starttls`: every connection upgrades with STARTTLS before sending (required: no plain fallback).
    var startTLS = false
    /// Messages per second, open loop; nil = as fast as accepted.
    var rate: Double?
    var count: Int?
    var duration: Double?
    var recipientsPerMessage = 1
    var domains: [(String, Double)] = LoadgenOptions.defaultDomainMix
    var sizes: [(Int, Double)] = [(4096, 1)]
    var sender = "loadgen@peregrine.test"
    /// `--list-unsubscribe`: every message carries RFC 8058 one-click
    /// unsubscribe headers, as Gmail and Yahoo require of bulk mail since 2024.
    var listUnsubscribe = false
    var heloName = "loadgen.peregrine.test"
    var jsonPath: String?
    var idsPath: String?
    var progress: Bool? = nil
    var seed: UInt64 = 1
    /// `--timeout`: the longest wait for any reply, and for the socket to take a message body (s).
    var timeout: Double = 60
    var runID: String = ""

    /// A consumer mailbox mix over the sink's providers (shares roughly as
    /// US/EU consumer lists look to ESPs; the sink serves every one of them).
    static let defaultDomainMix: [(String, Double)] = [
        ("gmail.com", 40), ("yahoo.com", 12), ("aol.com", 3), ("outlook.com", 8), ("hotmail.com", 8),
        ("live.com", 2), ("msn.com", 1), ("icloud.com", 9), ("comcast.net", 6), ("gmx.net", 5), ("orange.fr", 6),
    ]

    static let usage = """
    usage: peregrine-loadgen --target ADDR:PORT [options]
      --connections N            concurrent SMTP connections (16)
      --messages-per-connection N  messages before QUIT and reconnect; 0 = unlimited (100)
      --pipelining on|off        use PIPELINING when offered (on)
      --starttls                 STARTTLS on every connection (required; the certificate is not verified)
      --rate N/s|N/m|N/h         open-loop injection rate (default: as fast as accepted)
      --count N | --duration S   stop after N messages or S seconds (default --count 1000)
      --recipients N             recipients per message (1)
      --domains a.com=40,b.com=60  weighted recipient-domain mix (default: consumer mix)
      --size 4k | --sizes 4k=80,100k=20   message size, fixed or weighted
      --from ADDR                envelope sender (and From: header)
      --list-unsubscribe         add RFC 8058 List-Unsubscribe (https + mailto) and List-Unsubscribe-Post
      --source IP                bind connections to this local address
      --backend io_uring|epoll|dispatch   (epoll)
      --json FILE                write the JSON summary there ('-' = stdout)
      --ids FILE                 write "ID SEND-UNIX-NS" for every accepted message
      --progress | --no-progress live progress line (default: on a terminal)
      --seed N                   PRNG seed for the domain and size draws (1)
      --timeout S                longest wait for a reply or for the target to take a body (60)
    """

    enum ParseError: Error, CustomStringConvertible {
        case message(String)
        var description: String { if case .message(let m) = self { return m }; return "" }
    }

    static func parse(_ args: [String]) throws(ParseError) -> LoadgenOptions {
        var target: SocketAddress?
        var o = LoadgenOptions()
        var i = 0
        func value(_ flag: String) throws(ParseError) -> String {
            guard i + 1 < args.count else { throw .message("\(flag) needs a value") }
            i += 1
            return args[i]
        }
        func int(_ flag: String, min: Int = 0) throws(ParseError) -> Int {
            let v = try value(flag)
            guard let n = Int(v), n >= min else { throw .message("\(flag): '\(v)' is not a whole number ≥ \(min)") }
            return n
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "--target":
                let v = try value(a)
                do { target = try SocketAddress(parsing: v) } catch { throw .message("--target: \(error)") }
            case "--source":
                let v = try value(a)
                do { o.source = try SocketAddress(ip: v, port: 0) } catch { throw .message("--source: \(error)") }
            case "--backend":
                switch BackendKind.parse(try value(a)) {
                case .success(let k): o.backend = k
                case .failure(let e): throw .message("--backend: \(e)")
                }
            case "--connections": o.connections = try int(a, min: 1)
            case "--messages-per-connection": o.messagesPerConnection = try int(a)
            case "--pipelining":
                let v = try value(a)
                guard v == "on" || v == "off" else { throw .message("--pipelining takes on or off, not '\(v)'") }
                o.pipelining = v == "on"
            case "--rate": o.rate = try parseRate(try value(a))
            case "--count": o.count = try int(a, min: 1)
            case "--duration":
                let v = try value(a)
                guard let d = Double(v), d > 0, d <= maxDurationSeconds else {
                    throw .message("--duration: '\(v)' is not a number of seconds in (0, \(Int(maxDurationSeconds))]")
                }
                o.duration = d
            case "--timeout":
                let v = try value(a)
                guard let t = Double(v), t > 0, t <= maxDurationSeconds else {
                    throw .message("--timeout: '\(v)' is not a number of seconds in (0, \(Int(maxDurationSeconds))]")
                }
                o.timeout = t
            case "--recipients": o.recipientsPerMessage = try int(a, min: 1)
            case "--domains": o.domains = try parseWeighted(try value(a), flag: a) { $0.contains(".") ? $0 : nil }
            case "--size":
                let v = try value(a)
                guard let n = parseSize(v) else { throw .message("--size: '\(v)' is not a size like 4k or 100k (at most 1024m)") }
                o.sizes = [(n, 1)]
            case "--sizes": o.sizes = try parseWeighted(try value(a), flag: a) { parseSize($0) }
            case "--from": o.sender = try value(a)
            case "--json": o.jsonPath = try value(a)
            case "--ids": o.idsPath = try value(a)
            case "--starttls": o.startTLS = true
            case "--list-unsubscribe": o.listUnsubscribe = true
            case "--progress": o.progress = true
            case "--no-progress": o.progress = false
            case "--seed":
                let v = try value(a)
                guard let s = UInt64(v) else { throw .message("--seed: '\(v)' is not a number") }
                o.seed = s
            case "-h", "--help":
                // Asked-for usage is an answer, not an error: stdout, exit 0.
                print(usage)
                exit(0)
            default: throw .message("unknown option '\(a)'\n\(usage)")
            }
            i += 1
        }
        guard let target else { throw .message("--target ADDR:PORT is required\n\(usage)") }
        o.target = target
        if o.count == nil && o.duration == nil { o.count = 1000 }
        return o
    }

    /// Longest `--duration`: a year, far past any run, and small enough that
    /// the deadline in nanoseconds stays a UInt64.
    static let maxDurationSeconds: Double = 365 * 86_400
    /// `--rate` bounds in messages per second: one a day at the slowest, one a
    /// nanosecond at the fastest (the send interval is whole nanoseconds).
    static let minRatePerSecond: Double = 1.0 / 86_400
    static let maxRatePerSecond: Double = 1e9
    /// Largest `--size`: the filler body is allocated up front.
    static let maxSize = 1 << 30

    static func parseRate(_ text: String) throws(ParseError) -> Double {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let n = Double(parts[0]), n > 0, n.isFinite else {
            throw .message("--rate: '\(text)' is not a rate like 3000/s, 500/m or 10000/h")
        }
        let perSecond: Double
        switch parts[1] {
        case "s": perSecond = n
        case "m": perSecond = n / 60
        case "h": perSecond = n / 3600
        default: throw .message("--rate: unit '\(parts[1])' is not s, m or h")
        }
        guard perSecond >= minRatePerSecond, perSecond <= maxRatePerSecond else {
            throw .message("--rate: '\(text)' is outside 1/d (\(minRatePerSecond)/s) ... \(Int(maxRatePerSecond))/s")
        }
        return perSecond
    }

    static func parseSize(_ text: String) -> Int? {
        let t = text.lowercased()
        var mult = 1
        var digits = Substring(t)
        if t.hasSuffix("k") { mult = 1024; digits = digits.dropLast() }
        else if t.hasSuffix("m") { mult = 1024 * 1024; digits = digits.dropLast() }
        guard let n = Int(digits), n > 0 else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: mult)
        guard !overflow, bytes <= maxSize else { return nil }
        return bytes
    }

    static func parseWeighted<T>(_ text: String, flag: String, _ item: (String) -> T?) throws(ParseError) -> [(T, Double)] {
        var out: [(T, Double)] = []
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard let key = kv.first, let v = item(String(key)) else { throw .message("\(flag): '\(part)' is not valid") }
            var w = 1.0
            if kv.count == 2 {
                guard let parsed = Double(kv[1]), parsed > 0, parsed <= 1e9 else { throw .message("\(flag): weight in '\(part)' must be a number in (0, 1e9]") }
                w = parsed
            }
            out.append((v, w))
        }
        guard !out.isEmpty else { throw .message("\(flag): empty list") }
        return out
    }
}
