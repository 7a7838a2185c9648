import Foundation
import PeregrineIO
import PeregrineConfig

/// The profiles of a sink run and the file-level settings.
public struct SinkProfileSet: Sendable {
    public var profiles: [SinkISPProfile] = []
    /// `time-scale X` from a file (the command line overrides it).
    public var timeScale: Double?
    public init(profiles: [SinkISPProfile] = [], timeScale: Double? = nil) {
        self.profiles = profiles; self.timeScale = timeScale
    }
}

/// Reads ISP profile files: the PowerMTA-style block syntax of `BlockConfig`.
///
/// ```
/// time-scale 0.01                      # every time constant × 0.01 (CI)
/// include yahoo.conf                   # relative to this file
/// <isp gmail>
///     domains gmail.com googlemail.com
///     mx 127.0.1.1 127.0.1.2
///     port 2525
///     hostname mx.gmail.sink
///     reply-suffix gsmtp               # last line of `421-…` replies
///     max-connections 5 greeting "421-4.7.0 Try again later, closing connection."
///     max-msg-per-connection 50 mail "421 4.7.0 Try again later, closing connection."
///     max-msg-rate 3000/h mail "421-4.7.28 Gmail has detected …" burst 100 penalty
///     penalty-box 10m mail "421-4.7.28 …" [allow 1/m]
///     unknown-user "550-5.1.1 The email account …" unknown* nouser*   # [data]: refuse at end of DATA
///     mailbox-full "452-4.2.2 …" full*
///     inactive "550 5.2.1 …" inactive*
///     mailbox-rate 60/m "450-4.2.1 …" [PATTERN…]     # default: every mailbox
///     greylist 5m "450 4.2.0 <{rcpt}>: … Greylisted …" [PATTERN…]
///     latency banner|command|data fixed 50ms | uniform 10ms 50ms | exponential 20ms
///     random-failure 0.001 data "451 4.3.0 Temporary failure"
///     drop-during-data 0.0005
///     scripted-replies yes               # `450-x@…` answers 450
///     idle-timeout 5m                    # 421 4.4.2 and close after this long without input
/// </isp>
/// ```
/// Arguments after a limit's value may come in any order: the phase is one of
/// `greeting helo mail rcpt data`, the reply is the argument that starts with a
/// three-digit code, and `penalty`, `burst N`, `allow RATE` are keywords.
/// Reply texts may use `{ip}`, `{rcpt}`, `{local}`, `{domain}`, `{sender}`, `{host}`
/// and `\n` between lines.
public enum SinkProfileParser {
    public static func load(path: String) throws(ConfigError) -> SinkProfileSet {
        var set = SinkProfileSet()
        var seen: Set<String> = []
        try load(path: path, into: &set, including: &seen, depth: 0)
        try validate(set)
        return set
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> SinkProfileSet {
        var set = SinkProfileSet()
        var seen: Set<String> = []
        try apply(BlockConfig.parse(text, file: file), file: file, into: &set, including: &seen, depth: 0)
        try validate(set)
        return set
    }

    /// Loads several files into one set (`--profile` given more than once).
    public static func load(paths: [String]) throws(ConfigError) -> SinkProfileSet {
        var set = SinkProfileSet()
        var seen: Set<String> = []
        for p in paths { try load(path: p, into: &set, including: &seen, depth: 0) }
        try validate(set)
        return set
    }

    static func load(path: String, into set: inout SinkProfileSet, including seen: inout Set<String>, depth: Int) throws(ConfigError) {
        let canonical = URL(fileURLWithPath: path).standardizedFileURL.path
        if seen.contains(canonical) { return }  // included twice: once is enough
        seen.insert(canonical)
        try apply(BlockConfig.load(path: path), file: path, into: &set, including: &seen, depth: depth)
    }

    static func apply(_ nodes: [ConfigNode], file: String, into set: inout SinkProfileSet,
                      including seen: inout Set<String>, depth: Int) throws(ConfigError) {
        for node in nodes {
            switch (node.kind, node.name) {
            case (.directive, "time-scale"):
                let v = try node.value(probabilityLike(range: 0.000_001...1_000_000, what: "time scale"))
                set.timeScale = v
            case (.directive, "include"):
                guard depth < 8 else { throw node.error("include: nested too deeply") }
                let target = try node.singleArgument()
                let dir = (file as NSString).deletingLastPathComponent
                let path = target.hasPrefix("/") || dir.isEmpty ? target : dir + "/" + target
                guard FileManager.default.fileExists(atPath: path) else {
                    throw node.error("include: no such file '\(path)'")
                }
                try load(path: path, into: &set, including: &seen, depth: depth + 1)
            case (.block, "isp"):
                let name = try isp(name: node)
                if set.profiles.contains(where: { $0.name == name }) {
                    throw node.error("<isp \(name)> is defined twice")
                }
                set.profiles.append(try profile(node, name: name))
            case (.block, _):
                throw node.error("unknown block \(node.displayName) (expected <isp NAME>)")
            default:
                throw node.error("unknown directive '\(node.name)' outside <isp> (expected time-scale, include or <isp NAME>)")
            }
        }
    }

    static func isp(name node: ConfigNode) throws(ConfigError) -> String {
        guard node.arguments.count == 1, let n = node.arguments.first, !n.isEmpty else {
            throw node.error("<isp> needs one name, e.g. <isp gmail>")
        }
        return n
    }

    static func validate(_ set: SinkProfileSet) throws(ConfigError) {
        _ = set  // cross-file checks are done by the server when it binds (duplicate MX address:port).
    }

    // MARK: One <isp>

    static func profile(_ block: ConfigNode, name: String) throws(ConfigError) -> SinkISPProfile {
        var p = SinkISPProfile(name: name)
        var latencySeen: Set<String> = []
        for node in try block.directivesOnly() {
            let args = node.arguments
            switch node.name {
            case "domains", "domain":
                guard !args.isEmpty else { throw node.error("\(node.name) needs at least one domain") }
                for d in args {
                    guard d == "*" || isDomain(d) else { throw node.error("\(node.name): '\(d)' is not a domain name") }
                    p.domains.append(d.lowercased())
                }
            case "mx":
                guard !args.isEmpty else { throw node.error("mx needs at least one numeric address, e.g. mx 127.0.1.1") }
                for a in args {
                    do { _ = try SocketAddress(ip: a, port: 25) } catch {
                        throw node.error("mx: '\(a)' is not a numeric IPv4 or IPv6 address")
                    }
                    p.mx.append(a)
                }
            case "port":
                p.port = try node.value(ConfigValue.port)
            case "hostname":
                p.hostname = try node.singleArgument()
            case "reply-suffix":
                p.replySuffix = try node.singleArgument()
            case "banner":
                // Written with its code (`220 mx.google.com ESMTP …`) it is the whole
                // greeting; otherwise the text after `220 <hostname> `.
                let text = try node.singleArgument()
                if text.hasPrefix("220 ") || text.hasPrefix("220-") {
                    p.banner = String(text.dropFirst(4))
                    p.greetingIsWhole = true
                } else if text == "220" || (isReplyText(text) && !text.hasPrefix("220")) {
                    throw node.error("banner: a greeting written with its code must start with '220 ' and have text")
                } else {
                    p.banner = text
                    p.greetingIsWhole = false
                }
            case "max-connections":
                p.maxConnections = try limit(node, default: .greeting, perMXAllowed: true)
            case "max-connection-rate":
                let l = try rateLimit(node, default: .greeting)
                guard l.phase == .greeting || l.phase == .helo else {
                    throw node.error("max-connection-rate answers at greeting or helo, not \(l.phase.rawValue)")
                }
                p.connectionRate = l
            case "max-msg-per-connection":
                p.maxMessagesPerConnection = try limit(node, default: .mail)
            case "max-msg-rate":
                p.messageRate = try rateLimit(node, default: .mail)
            case "max-domain-msg-rate":
                let l = try rateLimit(node, default: .mail)
                guard l.phase == .mail || l.phase == .rcpt || l.phase == .data else {
                    throw node.error("max-domain-msg-rate: the envelope domain is known from MAIL FROM on; use mail, rcpt or data, not \(l.phase.rawValue)")
                }
                p.domainRate = l
            case "max-rcpt-per-msg":
                let l = try limit(node, default: .rcpt)
                guard l.phase == .rcpt, !l.penalty else { throw node.error("max-rcpt-per-msg answers at rcpt, without penalty") }
                p.maxRecipients = l
            case "max-msg-size":
                let size = try node.value(ConfigValue.size)
                guard size >= 1024, size <= Int(Int32.max) else { throw node.error("max-msg-size must be 1k to 2G bytes") }
                p.maxMessageSize = size
            case "bad-recipient-penalty":
                // `10% of 100`
                guard args.count == 3, args[1].lowercased() == "of", args[0].hasSuffix("%"),
                      let percent = Int(args[0].dropLast()), (1...100).contains(percent),
                      let window = Int(args[2]), (1...1_000_000).contains(window) else {
                    throw node.error("bad-recipient-penalty needs PERCENT% of N, e.g. bad-recipient-penalty 10% of 100")
                }
                p.badRecipientPenalty = (percent, window)
            case "warm-up":
                let l = try rateLimit(node, default: .mail)
                guard !l.penalty, l.rate.burst == l.rate.count else {
                    throw node.error("warm-up takes START/PERIOD, a phase and a reply (no burst, no penalty)")
                }
                p.warmUp = l
            case "complaint-penalty":
                // `0.3% of 1000`
                guard args.count == 3, args[1].lowercased() == "of", args[0].hasSuffix("%"),
                      let percent = Double(args[0].dropLast()), percent > 0, percent <= 100,
                      let window = Int(args[2]), (1...1_000_000).contains(window) else {
                    throw node.error("complaint-penalty needs PERCENT% of N, e.g. complaint-penalty 0.3% of 1000")
                }
                p.complaintPenalty = (percent, window)
            case "max-line-length":
                p.maxLineLength = try node.value { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 80...1_000_000) }
            case "penalty-box":
                p.penaltyBox = try penaltyBox(node)
            case "unknown-user", "mailbox-full", "inactive":
                guard let kind = SinkRecipientKind(rawValue: node.name) else { throw node.error("internal: \(node.name)") }
                let (reply, words) = try replyAndRest(node)
                // `rcpt` (the default) or `data` among the patterns picks the phase.
                var phase = SinkPhase.rcpt
                var patterns: [String] = []
                for w in words {
                    switch w.lowercased() {
                    case "rcpt": phase = .rcpt
                    case "data": phase = .data
                    default: patterns.append(w)
                    }
                }
                guard !patterns.isEmpty else {
                    throw node.error("\(node.name) needs local-part patterns after the reply, e.g. \(node.name) \"550 5.1.1 …\" unknown*")
                }
                p.recipientRules.append(SinkRecipientRule(kind: kind, patterns: patterns.map(SinkPattern.init), reply: reply, phase: phase))
            case "mailbox-rate":
                guard let first = args.first else { throw node.error("mailbox-rate needs RATE \"REPLY\" [PATTERN…]") }
                let rate = try sinkRate(node, first, burst: nil)
                let (reply, rest) = try replyAndRest(node, skip: 1)
                p.mailboxRate = SinkMailboxRate(rate: rate, patterns: (rest.isEmpty ? ["*"] : rest).map(SinkPattern.init), reply: reply)
            case "greylist":
                guard let first = args.first else { throw node.error("greylist needs DURATION \"REPLY\" [PATTERN…]") }
                let seconds = try seconds(node, first)
                let (reply, rest) = try replyAndRest(node, skip: 1)
                p.greylist = SinkGreylist(seconds: seconds, patterns: (rest.isEmpty ? ["*"] : rest).map(SinkPattern.init), reply: reply)
            case "latency":
                guard let which = args.first?.lowercased() else {
                    throw node.error("latency needs banner|command|data and a distribution")
                }
                guard !latencySeen.contains(which) else { throw node.error("latency \(which) is given twice") }
                latencySeen.insert(which)
                let dist = try latency(node, Array(args.dropFirst()))
                switch which {
                case "banner": p.bannerLatency = dist
                case "command": p.commandLatency = dist
                case "data": p.dataLatency = dist
                default: throw node.error("latency: '\(which)' is not banner, command or data")
                }
            case "random-failure":
                guard let first = args.first else { throw node.error("random-failure needs PROBABILITY PHASE \"REPLY\"") }
                let prob = try node.parse(first, probabilityLike(range: 0...1, what: "probability"))
                let (phase, reply, extra) = try phaseAndReply(node, Array(args.dropFirst()), default: .data)
                guard extra.isEmpty else { throw node.error("random-failure: unexpected '\(extra.joined(separator: " "))'") }
                p.randomFailures.append(SinkRandomFailure(probability: prob, phase: phase, reply: reply))
            case "drop-during-data":
                p.dropDuringData = try node.value(probabilityLike(range: 0...1, what: "probability"))
            case "idle-timeout":
                let secs = try seconds(node, try node.singleArgument())
                guard secs > 0 else { throw node.error("idle-timeout must be longer than zero") }
                p.idleTimeout = secs
            case "scripted-replies":
                p.scriptedReplies = try node.value(ConfigValue.bool)
            case "require-tls":
                switch args.count {
                case 0: p.requireTLS = sinkGmailRequireTLSReply
                case 1:
                    if let on = try? ConfigValue.bool(args[0]) {
                        p.requireTLS = on ? sinkGmailRequireTLSReply : nil
                    } else {
                        p.requireTLS = try template(node, args[0])
                    }
                default: throw node.error("require-tls takes yes|no or one quoted reply")
                }
                p.requireTLSLocation = p.requireTLS == nil ? nil : node.location
            case "require-dkim", "require-dmarc-alignment", "require-list-unsubscribe":
                try p.bulkSender.apply(node, args)
            case "starttls":
                let text = try node.singleArgument().lowercased()
                guard let mode = SinkStartTLSMode(rawValue: text) else {
                    throw node.error("starttls: '\(text)' is not offer, refuse or break")
                }
                p.startTLS = mode
            default:
                throw node.error("unknown directive '\(node.name)' in <isp \(name)>")
            }
        }
        if p.domains.isEmpty { throw block.error("<isp \(name)> needs a domains line") }
        if p.badRecipientPercent != nil && p.penaltyBox == nil {
            throw block.error("<isp \(name)>: bad-recipient-penalty needs a penalty-box (what the IP is put in)")
        }
        if p.complaintPenalty != nil && p.penaltyBox == nil {
            throw block.error("<isp \(name)>: complaint-penalty needs a penalty-box (what the sender is put in)")
        }
        return p
    }

    static func isDomain(_ d: String) -> Bool {
        !d.isEmpty && d.count <= 253 && d.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        }
    }

    static func probabilityLike(range: ClosedRange<Double>, what: String) -> (String) throws(ConfigValueError) -> Double {
        { (text: String) throws(ConfigValueError) -> Double in
            guard let v = Double(text), v.isFinite, range.contains(v) else {
                throw ConfigValueError("'\(text)' is not a \(what) in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
    }

    static func seconds(_ node: ConfigNode, _ text: String) throws(ConfigError) -> Double {
        let d = try node.parse(text, ConfigValue.duration)
        return Double(d.nanoseconds) / 1e9
    }

    static func sinkRate(_ node: ConfigNode, _ text: String, burst: Int?) throws(ConfigError) -> SinkRate {
        switch try node.parse(text, ConfigValue.rate) {
        case .unlimited:
            throw node.error("\(node.name): a limit needs a finite rate, not unlimited (remove the line instead)")
        case .limited(let count, let per):
            return SinkRate(count: count, seconds: Double(per.nanoseconds) / 1e9, burst: burst)
        }
    }

    static func isReplyText(_ s: String) -> Bool {
        let u = Array(s.utf8.prefix(4))
        // A code followed by ' ' or '-': a bare number (a burst, a count) is not a reply.
        guard u.count == 4, u[0...2].allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
        return u[3] == UInt8(ascii: " ") || u[3] == UInt8(ascii: "-")
    }

    static func template(_ node: ConfigNode, _ text: String) throws(ConfigError) -> SinkReplyTemplate {
        switch SinkReplyTemplate.parse(text) {
        case .success(let t): return t
        case .failure(let e): throw node.error("\(node.name): \(e.message)")
        }
    }

    /// The reply (the argument after `skip` that starts with a code) and the other arguments.
    static func replyAndRest(_ node: ConfigNode, skip: Int = 0) throws(ConfigError) -> (SinkReplyTemplate, [String]) {
        let args = Array(node.arguments.dropFirst(skip))
        let replies = args.filter(isReplyText)
        guard replies.count == 1, let text = replies.first else {
            throw node.error("\(node.name) needs exactly one quoted reply such as \"550 5.1.1 user unknown\"")
        }
        return (try template(node, text), args.filter { !isReplyText($0) })
    }

    static func phaseAndReply(_ node: ConfigNode, _ args: [String], default phase: SinkPhase)
        throws(ConfigError) -> (SinkPhase, SinkReplyTemplate, [String]) {
        var chosen: SinkPhase? = nil
        var reply: SinkReplyTemplate? = nil
        var rest: [String] = []
        for a in args {
            if let ph = SinkPhase(rawValue: a.lowercased()) {
                guard chosen == nil else { throw node.error("\(node.name): more than one phase") }
                chosen = ph
            } else if isReplyText(a) || a.lowercased() == "close" {
                guard reply == nil else { throw node.error("\(node.name): more than one reply text") }
                // `close`: no reply, the connection just closes (Yahoo at its per-connection cap).
                reply = a.lowercased() == "close" ? .silentClose : try template(node, a)
            } else {
                rest.append(a)
            }
        }
        guard let r = reply else {
            throw node.error("\(node.name) needs a quoted reply such as \"421 4.7.0 Try again later\"")
        }
        return (chosen ?? phase, r, rest)
    }

    /// `VALUE [PHASE] "REPLY"|close [penalty] [per-mx]`
    static func limit(_ node: ConfigNode, default phase: SinkPhase, perMXAllowed: Bool = false) throws(ConfigError) -> SinkLimit {
        guard let first = node.arguments.first else {
            throw node.error("\(node.name) needs a number, a phase and a reply, e.g. \(node.name) 5 greeting \"421 4.7.0 Too many connections\"")
        }
        let value = try node.parse(first) { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 1...1_000_000_000) }
        let (ph, reply, rest) = try phaseAndReply(node, Array(node.arguments.dropFirst()), default: phase)
        var penalty = false
        var perMX = false
        for word in rest {
            switch word.lowercased() {
            case "penalty": penalty = true
            case "per-mx" where perMXAllowed: perMX = true
            default: throw node.error("\(node.name): unexpected '\(word)'")
            }
        }
        return SinkLimit(value: value, phase: ph, reply: reply, penalty: penalty, perMX: perMX)
    }

    /// `RATE [PHASE] "REPLY" [burst N] [penalty]`
    static func rateLimit(_ node: ConfigNode, default phase: SinkPhase) throws(ConfigError) -> SinkRateLimit {
        guard let first = node.arguments.first else {
            throw node.error("\(node.name) needs a rate, a phase and a reply, e.g. \(node.name) 100/m \(phase.rawValue) \"421 4.7.0 rate limited\"")
        }
        let (ph, reply, rest) = try phaseAndReply(node, Array(node.arguments.dropFirst()), default: phase)
        var penalty = false
        var burst: Int? = nil
        var i = 0
        while i < rest.count {
            switch rest[i].lowercased() {
            case "penalty": penalty = true; i += 1
            case "burst":
                guard i + 1 < rest.count else { throw node.error("\(node.name): burst needs a number") }
                burst = try node.parse(rest[i + 1]) { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 1...1_000_000_000) }
                i += 2
            default: throw node.error("\(node.name): unexpected '\(rest[i])'")
            }
        }
        return SinkRateLimit(rate: try sinkRate(node, first, burst: burst), phase: ph, reply: reply, penalty: penalty)
    }

    /// `DURATION [PHASE] "REPLY" [allow RATE] [extend] [escalate N "REPLY"]`
    static func penaltyBox(_ node: ConfigNode) throws(ConfigError) -> SinkPenaltyBox {
        let args = node.arguments
        guard let first = args.first else {
            throw node.error("penalty-box needs a duration, a phase and a reply, e.g. penalty-box 2h mail \"421 4.7.0 deferred\"")
        }
        let secs = try seconds(node, first)
        var phase: SinkPhase? = nil
        var reply: SinkReplyTemplate? = nil
        var allow: SinkRate? = nil
        var extend = false
        var escalateAfter: Int? = nil
        var escalateReply: SinkReplyTemplate? = nil
        var i = 1
        while i < args.count {
            let a = args[i]
            if let ph = SinkPhase(rawValue: a.lowercased()) {
                guard phase == nil else { throw node.error("penalty-box: more than one phase") }
                phase = ph
                i += 1
            } else if isReplyText(a) {
                guard reply == nil else { throw node.error("penalty-box: more than one reply text (an escalation's reply follows 'escalate N')") }
                reply = try template(node, a)
                i += 1
            } else {
                switch a.lowercased() {
                case "allow":
                    guard i + 1 < args.count else { throw node.error("penalty-box: allow needs a RATE, e.g. allow 1/m") }
                    allow = try sinkRate(node, args[i + 1], burst: 1)
                    i += 2
                case "extend":
                    extend = true
                    i += 1
                case "escalate":
                    guard i + 2 < args.count, isReplyText(args[i + 2]) else {
                        throw node.error("penalty-box: escalate needs a count and a reply, e.g. escalate 20 \"553 5.7.2 [TSS09] …\"")
                    }
                    escalateAfter = try node.parse(args[i + 1]) { (t: String) throws(ConfigValueError) -> Int in try ConfigValue.integer(t, in: 1...1_000_000_000) }
                    escalateReply = try template(node, args[i + 2])
                    i += 3
                default:
                    throw node.error("penalty-box: unexpected '\(a)' (after the reply: allow RATE, extend, escalate N \"REPLY\")")
                }
            }
        }
        guard let reply else {
            throw node.error("penalty-box needs a quoted reply such as \"421 4.7.0 Try again later\"")
        }
        return SinkPenaltyBox(seconds: secs, phase: phase ?? .mail, reply: reply, allow: allow,
                              extendOnRetry: extend, escalateAfter: escalateAfter, escalateReply: escalateReply)
    }

    static func latency(_ node: ConfigNode, _ args: [String]) throws(ConfigError) -> SinkLatency {
        guard let kind = args.first?.lowercased() else {
            throw node.error("latency needs a distribution: fixed D, uniform MIN MAX, or exponential MEAN")
        }
        switch (kind, args.count) {
        case ("none", 1): return .none
        case ("fixed", 2): return .fixed(try seconds(node, args[1]))
        case ("uniform", 3):
            let a = try seconds(node, args[1]), b = try seconds(node, args[2])
            guard a <= b else { throw node.error("latency uniform: minimum \(args[1]) is above maximum \(args[2])") }
            return .uniform(a, b)
        case ("exponential", 2): return .exponential(try seconds(node, args[1]))
        default:
            throw node.error("latency: expected fixed D, uniform MIN MAX, exponential MEAN or none, got '\(args.joined(separator: " "))'")
        }
    }
}
