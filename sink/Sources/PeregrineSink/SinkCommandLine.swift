import PeregrineIO

/// `peregrine-sink` options.
public struct SinkOptions: Equatable, Sendable {
    public var profiles: [String] = []
    public var acceptAll = false
    public var listen: String?
    /// Overrides every profile's port (0: the kernel picks one per address).
    public var port: UInt16?
    public var backend: BackendKind = .epoll
    public var threads = 1
    public var stats: String?
    public var dns: String?
    public var recordIds: String?
    /// `--reports-via` and friends: asynchronous bounces and complaints (SinkAsyncReports).
    public var asyncReports: SinkAsyncReports.Options?
    var bouncePercent = 0.0, complaintPercent = 0.0, bounceTo: String?, complaintTo: String?
    /// `--tls-cert FILE --tls-key FILE`: STARTTLS on every listener.
    public var tlsCert: String?
    public var tlsKey: String?
    /// `--no-require-tls`: serve profiles that say `require-tls` in plain text.
    public var noRequireTLS = false
    public var timeScale: Double?
    public var seed: UInt64 = 1
    /// `--mx-fault ISP:N=blackhole[@DURATION]`, as given (checked against the profiles at start).
    public var mxFaults: [String] = []
    /// `--dns-fault NAME=servfail|nxdomain|timeout` (repeatable): what the DNS responder answers for NAME.
    public var dnsFaults: [String: SinkDNSFault] = [:]
    /// `--dkim-key DOMAIN:SELECTOR:PUBKEYFILE` (repeatable): the keys
    /// `require-dkim` verifies with (the sink does no DNS lookups of its own).
    public var dkimKeys: [String] = []
    public var quiet = false
    public var help = false
    public init() {}

    public static let usage = """
    usage: peregrine-sink [--profile FILE]... [--accept-all --listen ADDR:PORT]
                          [--backend io_uring|epoll|dispatch] [--threads N] [--port N]
                          [--stats-port [ADDR:]PORT] [--dns ADDR:PORT] [--record-ids FILE]
                          [--time-scale X] [--seed N] [--tls-cert FILE --tls-key FILE] [--no-require-tls]
                          [--dkim-key DOMAIN:SELECTOR:PUBKEYFILE]...
                          [--mx-fault ISP:N=blackhole|down|reset|slow=DELAY[@DURATION]]...
                          [--dns-fault NAME=servfail|nxdomain|timeout]... [--quiet]

      --profile FILE       ISP profiles (sink/profiles/all.conf has every shipped one); repeatable
      --accept-all         accept everything on --listen, no profile needed
      --listen ADDR:PORT   where --accept-all listens
      --port N             listen on port N for every profile MX address instead of the profile's (0: any free port)
      --backend B          I/O backend (default epoll)
      --threads N          event loops, each with its own SO_REUSEPORT listeners (default 1)
      --stats-port P       serve GET /stats as JSON on 127.0.0.1:P (or ADDR:P), and
                           POST /penalty-box/lift there: ends every penalty box at once
      --dns ADDR:PORT      answer MX/A queries for every profile domain over UDP
      --record-ids FILE    write "X-Loadgen-Id ARRIVAL-UNIX-NS" for every accepted message, one a line
                           (flushed at least every half second)
      --reports-via ADDR:PORT   send asynchronous bounces and ARF complaints over SMTP to this
                           listener (Peregrine's injection listener)
      --bounce-percent P   bounce P% of accepted messages after accepting them (RFC 3464 report to
                           the envelope sender, or --bounce-to ADDRESS)
      --complaint-percent P  complain about P% of them (RFC 5965 report to --complaint-to ADDRESS);
                           P may be a fraction (0.1: below Gmail's and Yahoo's 0.3% complaint-penalty)
      --time-scale X       multiply every time constant by X (profiles may set time-scale; 1 = real)
      --seed N             seed for the random choices (latency, random failures)
      --tls-cert FILE      PEM certificate (chain) for STARTTLS on every listener; needs --tls-key
      --tls-key FILE       its PEM private key (profiles: require-tls, starttls offer|refuse|break)
      --no-require-tls     turn every profile's require-tls off (a profile that requires TLS
                           does not start without --tls-cert otherwise)
      --mx-fault ISP:N=KIND[@DURATION]
                           MX host N (1 = mx1.<isp>.sink) fails, from the start or DURATION after it
                           (scaled by the time scale); repeatable. KIND: blackhole (accepts TCP, never
                           greets), down (connection refused), reset (RST instead of a greeting),
                           slow=DELAY (every reply DELAY late)
      --dns-fault NAME=servfail|nxdomain|timeout
                           the DNS responder answers every query for NAME (a domain or an MX host
                           name) with SERVFAIL, NXDOMAIN, or not at all; repeatable
    Stops on SIGTERM/SIGINT and prints the counters as JSON.
    """

    public struct Error: Swift.Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func parse(_ args: [String]) -> Result<SinkOptions, Error> {
        var o = SinkOptions()
        var i = 0
        func fail(_ m: String) -> Result<SinkOptions, Error> { .failure(Error(message: m)) }
        while i < args.count {
            var arg = args[i]
            var inline: String? = nil
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                inline = String(arg[arg.index(after: eq)...])
                arg = String(arg[..<eq])
            }
            func value() -> String? {
                if let v = inline { return v }
                guard i + 1 < args.count else { return nil }
                i += 1
                return args[i]
            }
            switch arg {
            case "--profile":
                guard let v = value() else { return fail("--profile needs a FILE") }
                o.profiles.append(v)
            case "--accept-all": o.acceptAll = true
            case "--listen":
                guard let v = value() else { return fail("--listen needs ADDR:PORT") }
                do { _ = try SocketAddress(parsing: v) } catch { return fail("--listen: \(error)") }
                o.listen = v
            case "--port":
                guard let v = value(), let p = UInt16(v) else { return fail("--port needs a number 0-65535") }
                o.port = p
            case "--backend":
                guard let v = value() else { return fail("--backend needs io_uring, epoll or dispatch") }
                switch BackendKind.parse(v) {
                case .success(let k): o.backend = k
                case .failure(let e): return fail("--backend: \(e)")
                }
            case "--threads":
                guard let v = value(), let n = Int(v), (1...256).contains(n) else { return fail("--threads needs a number 1-256") }
                o.threads = n
            case "--stats-port", "--stats":
                guard let v = value() else { return fail("--stats-port needs a PORT or ADDR:PORT") }
                let text = v.contains(":") ? v : "127.0.0.1:\(v)"
                do { _ = try SocketAddress(parsing: text) } catch { return fail("--stats-port: \(error)") }
                o.stats = text
            case "--dns":
                guard let v = value() else { return fail("--dns needs ADDR:PORT") }
                do { _ = try SocketAddress(parsing: v) } catch { return fail("--dns: \(error)") }
                o.dns = v
            case "--record-ids":
                guard let v = value(), !v.isEmpty else { return fail("--record-ids needs a FILE") }
                o.recordIds = v
            case "--reports-via":
                guard let v = value() else { return fail("--reports-via needs ADDR:PORT") }
                do { o.asyncReports = SinkAsyncReports.Options(via: try SocketAddress(parsing: v)) } catch {
                    return fail("--reports-via: \(error)")
                }
            case "--bounce-percent", "--complaint-percent":
                let name = args[i]
                guard let v = value(), let n = Double(v), n.isFinite, (0...100).contains(n) else {
                    return fail("\(name) needs a number 0-100 (fractions allowed: 0.1)")
                }
                if name == "--bounce-percent" { o.bouncePercent = n } else { o.complaintPercent = n }
            case "--bounce-to", "--complaint-to":
                let name = args[i]
                guard let v = value(), v.contains("@") else { return fail("\(name) needs an email address") }
                if name == "--bounce-to" { o.bounceTo = v } else { o.complaintTo = v }
            case "--time-scale":
                guard let v = value(), let x = Double(v), x.isFinite, x > 0 else { return fail("--time-scale needs a number above 0") }
                o.timeScale = x
            case "--seed":
                guard let v = value(), let n = UInt64(v) else { return fail("--seed needs a whole number") }
                o.seed = n
            case "--tls-cert":
                guard let v = value(), !v.isEmpty else { return fail("--tls-cert needs a FILE") }
                o.tlsCert = v
            case "--tls-key":
                guard let v = value(), !v.isEmpty else { return fail("--tls-key needs a FILE") }
                o.tlsKey = v
            case "--mx-fault":
                guard let v = value(), !v.isEmpty else { return fail("--mx-fault needs ISP:N=blackhole[@DURATION]") }
                o.mxFaults.append(v)
            case "--dns-fault":
                guard let v = value(), let eq = v.lastIndex(of: "="), eq != v.startIndex,
                      let fault = SinkDNSFault(rawValue: String(v[v.index(after: eq)...])) else {
                    return fail("--dns-fault needs NAME=servfail|nxdomain|timeout")
                }
                var name = v[..<eq].lowercased()
                if name.hasSuffix(".") { name.removeLast() }
                o.dnsFaults[name] = fault
            case "--dkim-key":
                guard let v = value(), v.split(separator: ":", maxSplits: 2).count == 3 else {
                    return fail("--dkim-key needs DOMAIN:SELECTOR:PUBKEYFILE")
                }
                o.dkimKeys.append(v)
            case "--no-require-tls": o.noRequireTLS = true
            case "--quiet", "-q": o.quiet = true
            case "--help", "-h": o.help = true
            default:
                return fail("unknown option '\(args[i])' (see --help)")
            }
            if inline != nil, ["--accept-all", "--no-require-tls", "--quiet", "--help"].contains(arg) {
                return fail("\(arg) takes no value")
            }
            i += 1
        }
        if o.help { return .success(o) }
        if (o.tlsCert == nil) != (o.tlsKey == nil) { return fail("--tls-cert and --tls-key go together") }
        if o.asyncReports == nil && (o.bouncePercent > 0 || o.complaintPercent > 0) {
            return fail("--bounce-percent and --complaint-percent need --reports-via ADDR:PORT")
        }
        if o.complaintPercent > 0 && o.complaintTo == nil { return fail("--complaint-percent needs --complaint-to ADDRESS") }
        if var r = o.asyncReports {
            r.bouncePercent = o.bouncePercent; r.complaintPercent = o.complaintPercent
            r.bounceTo = o.bounceTo; r.complaintTo = o.complaintTo
            o.asyncReports = r
        }
        if o.acceptAll && o.listen == nil { return fail("--accept-all needs --listen ADDR:PORT") }
        if o.listen != nil && !o.acceptAll { return fail("--listen is for --accept-all (profiles listen on their mx addresses)") }
        if o.profiles.isEmpty && !o.acceptAll {
            return fail("nothing to serve: give --profile FILE or --accept-all --listen ADDR:PORT")
        }
        return .success(o)
    }
}
