import Foundation
import PeregrineIO
import PeregrineConfig

/// A reply the sink decided to give, rendered for one connection/recipient.
public struct SinkRenderedReply: Hashable, Sendable {
    public var code: Int
    public var enhanced: String?
    /// Text of each line, without code or enhanced code.
    public var lines: [String]
    /// Close the connection once the reply is sent.
    public var close: Bool
    public var reason: SinkReason

    /// One-line form for logs and tests: "421 4.7.0 text".
    public var text: String {
        var s = String(code)
        if let e = enhanced { s += " " + e }
        let t = lines.joined(separator: " ")
        if !t.isEmpty { s += " " + t }
        return s
    }
}

/// What to do with an event.
public enum SinkDecision: Hashable, Sendable {
    /// Go on with the normal positive reply.
    case accept
    /// Answer with this reply (and close if it says so).
    case reply(SinkRenderedReply)
    /// Close the connection without a reply (a drop during DATA).
    case drop

    public var reply: SinkRenderedReply? {
        if case .reply(let r) = self { return r }
        return nil
    }
}

/// What a provider remembers about one sender, a sending IP or an envelope
/// sender domain: its message rate, its penalty box and what it tried inside.
public final class SinkReputation {
    var rate: RateLimiter?
    var penaltyUntil: UInt64 = 0
    var penaltyAllow: RateLimiter?
    /// Attempts the current box refused (for `escalate`).
    public internal(set) var refusedInBox = 0
    /// The box turned into a permanent refusal (`escalate`).
    public internal(set) var permanent = false
    /// Recipients and bad ones (unknown, inactive) in the current window of
    /// `bad-recipient-penalty` (a tumbling window of N recipients).
    var recipientsInWindow = 0
    var badInWindow = 0
    /// Accepted messages and those complained about in the current window of `complaint-penalty`.
    var messagesInWindow = 0
    var complaintsInWindow = 0
    /// Complaints the sender drew over the run.
    public internal(set) var complaints: UInt64 = 0
    init() {}
}

/// Per sending IP state at one provider.
public final class SinkIPState {
    public let ip: String
    public internal(set) var open = 0
    /// Open connections per MX host (index in the profile's `mx`).
    var openPerMX: [Int: Int] = [:]
    public internal(set) var counters = SinkCounters()
    public let reputation = SinkReputation()
    var connectionRate: RateLimiter?
    /// `warm-up`: when the provider first saw this IP, the period it is in, and what it sent in it.
    var firstSeen: UInt64?
    var warmUpPeriod: UInt64 = 0
    var warmUpCount = 0
    init(ip: String) { self.ip = ip }
}

/// One provider at run time: its profile with every time constant scaled to
/// nanoseconds, and the state of its sending IPs, mailboxes and greylist.
public final class SinkProvider {
    public let profile: SinkISPProfile
    public let index: Int
    public private(set) var ips: [String: SinkIPState] = [:]
    public internal(set) var open = 0
    public internal(set) var peakOpen = 0
    /// Tokens per emission interval, in ns.
    let rateInterval: UInt64
    let domainRateInterval: UInt64
    let connectionRateInterval: UInt64
    let penaltyNanos: UInt64
    let penaltyAllowInterval: UInt64
    let greylistNanos: UInt64
    let mailboxInterval: UInt64
    /// Idle timeout in ns; 0 when none.
    public let idleNanos: UInt64
    /// `warm-up`: one period, in ns.
    let warmUpNanos: UInt64
    let scale: Double
    var mailboxes: [String: RateLimiter] = [:]
    var greylist: [String: UInt64] = [:]
    /// Reputation per envelope sender domain (lower case), for `max-domain-msg-rate`.
    public private(set) var senderDomains: [String: SinkReputation] = [:]
    /// `--mx-fault`: MX host index → its fault and when it starts.
    var mxFaults: [Int: SinkMXFaultState] = [:]
    /// Connections a faulty MX host accepted and never greeted (blackhole) or reset.
    public internal(set) var blackholed: UInt64 = 0
    public internal(set) var reset: UInt64 = 0

    /// MX host `mx`'s fault in effect `sinceStart` ns into the run, if any.
    func fault(mx: Int, sinceStart: UInt64) -> SinkMXFaultState? {
        guard let f = mxFaults[mx], sinceStart >= f.afterNanos else { return nil }
        return f
    }

    init(profile: SinkISPProfile, index: Int, scale: Double) {
        self.profile = profile
        self.index = index
        self.scale = scale
        func ns(_ seconds: Double) -> UInt64 { SinkProvider.nanos(seconds, scale) }
        func interval(_ r: SinkRate?) -> UInt64 { r.map { ns($0.seconds / Double($0.count)) } ?? 0 }
        rateInterval = interval(profile.messageRate?.rate)
        domainRateInterval = interval(profile.domainRate?.rate)
        connectionRateInterval = interval(profile.connectionRate?.rate)
        penaltyNanos = ns(profile.penaltyBox?.seconds ?? 0)
        penaltyAllowInterval = interval(profile.penaltyBox?.allow)
        greylistNanos = ns(profile.greylist?.seconds ?? 0)
        mailboxInterval = interval(profile.mailboxRate?.rate)
        idleNanos = ns(profile.idleTimeout ?? 0)
        warmUpNanos = max(1, ns(profile.warmUp?.rate.seconds ?? 0))
    }

    static func nanos(_ seconds: Double, _ scale: Double) -> UInt64 {
        let v = seconds * scale * 1e9
        guard v.isFinite, v > 0 else { return 0 }
        return v >= 1.8e19 ? UInt64.max / 2 : UInt64(v)
    }

    func ipState(_ ip: String) -> SinkIPState {
        if let s = ips[ip] { return s }
        let s = SinkIPState(ip: ip)
        if let r = profile.messageRate { s.reputation.rate = RateLimiter(intervalNanos: rateInterval, burst: r.rate.burst) }
        if let r = profile.connectionRate { s.connectionRate = RateLimiter(intervalNanos: connectionRateInterval, burst: r.rate.burst) }
        ips[ip] = s
        return s
    }

    /// The reputation of an envelope sender domain (lower case).
    func domainReputation(_ domain: String) -> SinkReputation {
        if let r = senderDomains[domain] { return r }
        let r = SinkReputation()
        if let d = profile.domainRate { r.rate = RateLimiter(intervalNanos: domainRateInterval, burst: d.rate.burst) }
        senderDomains[domain] = r
        return r
    }

    /// Totals over every IP.
    public var totals: SinkCounters {
        var t = SinkCounters()
        for s in ips.values { t.merge(s.counters) }
        t.peakConcurrentConnections = peakOpen
        return t
    }
}

/// One SMTP connection as the policy sees it.
public final class SinkConnection {
    public let provider: SinkProvider
    public let ipState: SinkIPState
    /// The MX host it came in on (index in the profile's `mx`).
    public let mx: Int
    /// Gmail-style session id for `{session}` in replies (seeded, so reproducible).
    public let sessionID: String
    /// Messages accepted on this connection.
    public internal(set) var messages = 0
    var overConnectionLimit = false
    var overConnectionRate = false
    var sender = ""
    /// The envelope sender's domain (lower case) and its reputation, when the
    /// profile keys a limit on it (`max-domain-msg-rate`).
    var senderDomain = ""
    var domainReputation: SinkReputation?
    public internal(set) var acceptedRecipients = 0
    /// A recipient rule that refuses this transaction at the end of DATA.
    var refuseAtData: (SinkRecipientRule, String)?
    var closed = false
    /// `--mx-fault …=slow=DELAY`: added to every reply's latency (ns, scaled).
    public internal(set) var extraLatency: UInt64 = 0
    /// The session completed a TLS handshake.
    public internal(set) var tls = false
    init(provider: SinkProvider, ipState: SinkIPState, mx: Int, sessionID: String) {
        self.provider = provider
        self.ipState = ipState
        self.mx = mx
        self.sessionID = sessionID
    }
    public var ip: String { ipState.ip }
}

/// The ISP policy engine: pure, deterministic (seeded), clock passed in.
/// Given an event of an SMTP session it says accept, reply (and maybe close),
/// or drop, and counts what happened. Not thread-safe: a server with several
/// loops guards it with a lock.
public final class SinkPolicy {
    public let providers: [SinkProvider]
    public let timeScale: Double
    var random: SeededRandom
    /// Session ids draw from their own sequence: they do not shift the seeded
    /// latencies and failures of a run that did not print them before.
    var sessionRandom: SeededRandom

    public init(profiles: [SinkISPProfile], timeScale: Double = 1, seed: UInt64 = 1) {
        self.timeScale = timeScale
        self.providers = profiles.enumerated().map { SinkProvider(profile: $0.element, index: $0.offset, scale: timeScale) }
        self.random = SeededRandom(seed: seed)
        self.sessionRandom = SeededRandom(seed: seed ^ 0x5E55_1011_D5EE_D5ED)
    }

    public func provider(named name: String) -> SinkProvider? {
        providers.first { $0.profile.name == name }
    }

    // MARK: Events

    /// A new connection from `ip` to MX host number `mx` of the provider; the
    /// decision is the greeting's.
    public func connect(provider: SinkProvider, ip: String, mx: Int = 0, now: UInt64) -> (SinkConnection, SinkDecision) {
        let s = provider.ipState(ip)
        if s.firstSeen == nil { s.firstSeen = now }
        let c = SinkConnection(provider: provider, ipState: s, mx: mx, sessionID: nextSessionID())
        s.open += 1
        s.openPerMX[mx, default: 0] += 1
        s.counters.sessions &+= 1
        if s.open > s.counters.peakConcurrentConnections { s.counters.peakConcurrentConnections = s.open }
        provider.open += 1
        if provider.open > provider.peakOpen { provider.peakOpen = provider.open }
        if let limit = provider.profile.maxConnections {
            let open = limit.perMX ? s.openPerMX[mx, default: 0] : s.open
            if open > limit.value { c.overConnectionLimit = true }
        }
        // Every connection attempt asks the bucket, concurrent or not; a refused
        // attempt takes no token, so a sender that slows down gets back in.
        if s.connectionRate?.tryAcquire(now: now) == false { c.overConnectionRate = true }
        return (c, check(.greeting, c, rcpt: nil, now: now) ?? .accept)
    }

    /// `5b1f17b1804b1-43e3b9e1b0asi1234567.142`: the shape of Gmail's ids (hex, `si`, digits).
    func nextSessionID() -> String {
        let a = sessionRandom.next(), b = sessionRandom.next()
        let hexA = String(a >> 12, radix: 16), hexB = String(b >> 24, radix: 16)
        return String(repeating: "0", count: max(0, 13 - hexA.count)) + hexA + "-"
            + String(repeating: "0", count: max(0, 10 - hexB.count)) + hexB
            + "si\(a % 10_000_000).\(b % 1000)"
    }

    /// The whole greeting text after `220 `, when the sink writes the greeting
    /// itself (a `banner` given with its code, or one with placeholders); nil:
    /// the SMTP session's own `220 <hostname> <banner>`.
    public func greetingText(_ c: SinkConnection) -> String? {
        let profile = c.provider.profile
        guard let banner = profile.banner, profile.greetingIsWhole || banner.contains("{") else { return nil }
        let text = profile.greetingIsWhole ? banner : profile.hostname + " " + banner
        return fill(text, c, rcpt: nil)
    }

    /// HELO/EHLO.
    public func helo(_ c: SinkConnection, now: UInt64) -> SinkDecision {
        check(.helo, c, rcpt: nil, now: now) ?? .accept
    }

    /// MAIL FROM (`sender` without brackets; empty for the null sender).
    public func mailFrom(_ c: SinkConnection, sender: String, now: UInt64) -> SinkDecision {
        c.sender = sender
        c.acceptedRecipients = 0
        c.refuseAtData = nil
        if c.provider.profile.domainRate != nil {
            let domain = SinkPolicy.domain(of: sender)
            c.senderDomain = domain
            c.domainReputation = domain.isEmpty ? nil : c.provider.domainReputation(domain)
        }
        if !c.tls, let t = c.provider.profile.requireTLS {
            return refuse(.mail, .tlsRequired, t, c, rcpt: nil, penalty: nil, now: now)
        }
        return check(.mail, c, rcpt: nil, now: now) ?? .accept
    }

    /// The connection completed a TLS handshake (`ok`) or failed one.
    public func tlsHandshake(_ c: SinkConnection, ok: Bool) {
        if ok {
            c.tls = true
            c.ipState.counters.sessionsTLS &+= 1
        } else {
            c.ipState.counters.tlsHandshakeFailures &+= 1
        }
    }

    /// RCPT TO (`recipient` without brackets).
    public func rcptTo(_ c: SinkConnection, recipient: String, now: UInt64) -> SinkDecision {
        if let d = check(.rcpt, c, rcpt: recipient, now: now) { return d }
        let p = c.provider
        let profile = p.profile
        if let m = profile.maxRecipients, c.acceptedRecipients >= m.value {
            return refuse(.rcpt, .tooManyRecipients, m.reply, c, rcpt: recipient, penalty: nil, now: now)
        }
        let at = recipient.utf8.lastIndex(of: UInt8(ascii: "@")) ?? recipient.utf8.endIndex
        let local = recipient.utf8[recipient.utf8.startIndex..<at]

        if profile.scriptedReplies, let code = SinkPolicy.scriptedCode(local), code >= 400 {
            let cls = code / 100
            let t = SinkReplyTemplate(code: code, enhanced: "\(cls).0.0",
                                      lines: ["Scripted reply for <{rcpt}>"])
            return refuse(.rcpt, .scripted, t, c, rcpt: recipient, penalty: nil, now: now)
        }
        for rule in profile.recipientRules where rule.patterns.contains(where: { $0.matches(local) }) {
            noteRecipient(c, bad: rule.kind != .mailboxFull, now: now)
            if rule.phase == .data {
                // Accepted now, refused with the whole message at the end of DATA.
                if c.refuseAtData == nil { c.refuseAtData = (rule, recipient) }
                c.acceptedRecipients += 1
                return .accept
            }
            return refuse(.rcpt, SinkReason(rule.kind), rule.reply, c, rcpt: recipient, penalty: nil, now: now)
        }
        if let g = profile.greylist, g.patterns.contains(where: { $0.matches(local) }) {
            let key = c.ip + "\u{0}" + c.sender.lowercased() + "\u{0}" + recipient.lowercased()
            if let first = p.greylist[key] {
                if now &- first < p.greylistNanos {
                    return refuse(.rcpt, .greylisted, g.reply, c, rcpt: recipient, penalty: nil, now: now)
                }
            } else {
                p.greylist[key] = now
                return refuse(.rcpt, .greylisted, g.reply, c, rcpt: recipient, penalty: nil, now: now)
            }
        }
        if let m = profile.mailboxRate, m.patterns.contains(where: { $0.matches(local) }) {
            let key = recipient.lowercased()
            var bucket = p.mailboxes[key] ?? RateLimiter(intervalNanos: p.mailboxInterval, burst: m.rate.burst)
            let ok = bucket.tryAcquire(now: now)
            p.mailboxes[key] = bucket
            if !ok { return refuse(.rcpt, .mailboxRate, m.reply, c, rcpt: recipient, penalty: nil, now: now) }
        }
        noteRecipient(c, bad: false, now: now)
        c.acceptedRecipients += 1
        c.ipState.counters.recipientsAccepted &+= 1
        return .accept
    }

    /// `bad-recipient-penalty`: counts a recipient of the sending IP; at the
    /// end of each window of N, a share of bad ones at or over P% boxes the IP.
    func noteRecipient(_ c: SinkConnection, bad: Bool, now: UInt64) {
        let profile = c.provider.profile
        guard let percent = profile.badRecipientPercent else { return }
        let rep = c.ipState.reputation
        rep.recipientsInWindow += 1
        if bad { rep.badInWindow += 1 }
        guard rep.recipientsInWindow >= profile.badRecipientWindow else { return }
        if rep.badInWindow * 100 >= percent * rep.recipientsInWindow { arm(rep, c.provider, now: now) }
        rep.recipientsInWindow = 0
        rep.badInWindow = 0
    }

    /// `complaint-penalty`: an accepted message of this connection's sender,
    /// and whether a complaint about it goes back (the sink's ARF report). At
    /// the end of each window of N messages, a complaint share at or over P%
    /// boxes the sending IP, and the envelope domain where the profile keys on
    /// it (so rotating IPs does not launder complaints either).
    public func noteAccepted(_ c: SinkConnection, complained: Bool, now: UInt64) {
        guard let (percent, window) = c.provider.profile.complaintPenalty else { return }
        for rep in [c.ipState.reputation, c.domainReputation].compactMap({ $0 }) {
            rep.messagesInWindow += 1
            if complained { rep.complaintsInWindow += 1; rep.complaints &+= 1 }
            guard rep.messagesInWindow >= window else { continue }
            if Double(rep.complaintsInWindow) * 100 >= percent * Double(rep.messagesInWindow) { arm(rep, c.provider, now: now) }
            rep.messagesInWindow = 0
            rep.complaintsInWindow = 0
        }
    }

    /// Ends every penalty box (escalated ones too) at every provider, as if
    /// each had run out; the senders' rates and counters stay. Returns how many were on.
    public func liftPenaltyBoxes(now: UInt64) -> Int {
        var lifted = 0
        for p in providers {
            for rep in p.ips.values.map(\.reputation) + Array(p.senderDomains.values)
            where rep.permanent || now < rep.penaltyUntil {
                lifted += 1
                rep.penaltyUntil = 0
                rep.penaltyAllow = nil
                rep.refusedInBox = 0
                rep.permanent = false
            }
        }
        return lifted
    }

    /// Puts a sender in the provider's penalty box (unless it is in it already, or permanently refused).
    func arm(_ rep: SinkReputation, _ provider: SinkProvider, now: UInt64) {
        guard let box = provider.profile.penaltyBox, now >= rep.penaltyUntil, !rep.permanent else { return }
        rep.penaltyUntil = now &+ provider.penaltyNanos
        rep.refusedInBox = 0
        if let allow = box.allow {
            // The first allowed message comes one interval after the trip.
            var b = RateLimiter(intervalNanos: provider.penaltyAllowInterval, burst: allow.burst)
            _ = b.tryAcquire(now: now)
            rep.penaltyAllow = b
        } else {
            rep.penaltyAllow = nil
        }
    }

    /// The DATA command (after at least one accepted recipient): `.drop` means
    /// the connection is to be dropped while the body arrives.
    public func dataCommand(_ c: SinkConnection, now: UInt64) -> SinkDecision {
        let p = c.provider.profile.dropDuringData
        if p > 0, random.unit() < p {
            c.ipState.counters.messagesDropped &+= 1
            return .drop
        }
        return .accept
    }

    /// The end of DATA, `size` bytes received.
    public func endOfData(_ c: SinkConnection, size: Int, now: UInt64) -> SinkDecision {
        if let d = check(.data, c, rcpt: nil, now: now) {
            c.acceptedRecipients = 0
            c.refuseAtData = nil
            return d
        }
        if let (rule, rcpt) = c.refuseAtData {
            c.acceptedRecipients = 0
            c.refuseAtData = nil
            return refuse(.data, SinkReason(rule.kind), rule.reply, c, rcpt: rcpt, penalty: nil, now: now)
        }
        c.acceptedRecipients = 0
        c.messages += 1
        let counters = c.ipState
        counters.counters.messagesAccepted &+= 1
        counters.counters.bytesAccepted &+= UInt64(max(0, size))
        if c.messages > counters.counters.maxMessagesOnOneConnection {
            counters.counters.maxMessagesOnOneConnection = c.messages
        }
        return .accept
    }

    /// A message refused at the end of DATA by a bulk-sender rule (counted as
    /// rejected or deferred with its reason; the transaction is over).
    func refuseMessage(_ c: SinkConnection, _ reason: SinkReason, _ reply: SinkReplyTemplate, now: UInt64) -> SinkDecision {
        c.acceptedRecipients = 0
        c.refuseAtData = nil
        return refuse(.data, reason, reply, c, rcpt: nil, penalty: nil, now: now)
    }

    /// RSET.
    public func reset(_ c: SinkConnection) {
        c.acceptedRecipients = 0
        c.refuseAtData = nil
        c.sender = ""
        c.senderDomain = ""
        c.domainReputation = nil
    }

    /// The sink closed the connection for idling.
    public func timedOut(_ c: SinkConnection) {
        c.ipState.counters.sessionsTimedOut &+= 1
    }

    /// The connection closed (either side). Safe to call more than once.
    public func disconnect(_ c: SinkConnection) {
        guard !c.closed else { return }
        c.closed = true
        c.ipState.open -= 1
        c.ipState.openPerMX[c.mx, default: 1] -= 1
        c.provider.open -= 1
    }

    /// How long to wait before answering at `phase` (banner, a command, end of DATA), in ns.
    public func latency(_ c: SinkConnection, _ phase: SinkPhase) -> UInt64 {
        let profile = c.provider.profile
        let l: SinkLatency
        switch phase {
        case .greeting: l = profile.bannerLatency
        case .helo, .mail, .rcpt: l = profile.commandLatency
        case .data: l = profile.dataLatency
        }
        let seconds: Double
        switch l {
        case .none: return c.extraLatency
        case .fixed(let s): seconds = s
        case .uniform(let a, let b): seconds = a + (b - a) * random.unit()
        case .exponential(let mean): seconds = -mean * Foundation.log(1 - random.unit())
        }
        return SinkProvider.nanos(seconds, timeScale) &+ c.extraLatency
    }

    // MARK: Limits

    /// Evaluates every limit that answers at `phase`; nil means none applies.
    func check(_ phase: SinkPhase, _ c: SinkConnection, rcpt: String?, now: UInt64) -> SinkDecision? {
        let p = c.provider
        let profile = p.profile
        let s = c.ipState
        if let l = profile.maxConnections, l.phase == phase, c.overConnectionLimit {
            return refuse(phase, .maxConnections, l.reply, c, rcpt: rcpt, penalty: l.penalty ? s.reputation : nil, now: now)
        }
        if let l = profile.connectionRate, l.phase == phase, c.overConnectionRate {
            return refuse(phase, .connectionRate, l.reply, c, rcpt: rcpt, penalty: l.penalty ? s.reputation : nil, now: now)
        }
        if let box = profile.penaltyBox {
            if box.phase == phase, let d = boxed(s.reputation, box, box.reply, phase, c, rcpt: rcpt, now: now) { return d }
            // A domain is known from MAIL FROM on: its box answers there at the
            // earliest, with the domain limit's text (Gmail's domain wording).
            if let dr = c.domainReputation, SinkPolicy.domainPhase(box.phase) == phase,
               let d = boxed(dr, box, profile.domainRate?.reply ?? box.reply, phase, c, rcpt: rcpt, now: now) { return d }
        }
        if let l = profile.maxMessagesPerConnection, l.phase == phase, c.messages >= l.value {
            return refuse(phase, .maxMessagesPerConnection, l.reply, c, rcpt: rcpt, penalty: l.penalty ? s.reputation : nil, now: now)
        }
        if let w = profile.warmUp, w.phase == phase, !warmUpAllows(s, w, c.provider, now: now) {
            return refuse(phase, .warmUp, w.reply, c, rcpt: rcpt, penalty: nil, now: now)
        }
        if let r = profile.messageRate, r.phase == phase, s.reputation.rate?.tryAcquire(now: now) == false {
            return refuse(phase, .messageRate, r.reply, c, rcpt: rcpt, penalty: r.penalty ? s.reputation : nil, now: now)
        }
        if let r = profile.domainRate, r.phase == phase, let dr = c.domainReputation, dr.rate?.tryAcquire(now: now) == false {
            return refuse(phase, .domainRate, r.reply, c, rcpt: rcpt, penalty: r.penalty ? dr : nil, now: now)
        }
        for f in profile.randomFailures where f.phase == phase && f.probability > 0 {
            if random.unit() < f.probability {
                return refuse(phase, .randomFailure, f.reply, c, rcpt: rcpt, penalty: nil, now: now)
            }
        }
        return nil
    }

    /// `warm-up`: START << k messages in the k-th period since the IP was
    /// first seen; counts the attempt when it fits.
    func warmUpAllows(_ s: SinkIPState, _ w: SinkRateLimit, _ p: SinkProvider, now: UInt64) -> Bool {
        let period = (now &- (s.firstSeen ?? now)) / p.warmUpNanos
        if period != s.warmUpPeriod { s.warmUpPeriod = period; s.warmUpCount = 0 }
        // After 40 doublings no sender is still warming up.
        guard period < 40, w.rate.count <= Int.max >> Int(period) else { return true }
        let allowance = w.rate.count << Int(period)
        guard s.warmUpCount < allowance else { return false }
        s.warmUpCount += 1
        return true
    }

    /// The phase a domain's penalty box answers at: the box's, but not before MAIL FROM.
    static func domainPhase(_ phase: SinkPhase) -> SinkPhase {
        switch phase {
        case .greeting, .helo, .mail: return .mail
        case .rcpt, .data: return phase
        }
    }

    /// The box's answer for a sender in it (nil: not boxed, or let through by `allow`).
    func boxed(_ rep: SinkReputation, _ box: SinkPenaltyBox, _ reply: SinkReplyTemplate, _ phase: SinkPhase, _ c: SinkConnection,
               rcpt: String?, now: UInt64) -> SinkDecision? {
        if rep.permanent, let e = box.escalateReply {
            return refuse(phase, .escalated, e, c, rcpt: rcpt, penalty: nil, now: now)
        }
        guard now < rep.penaltyUntil else { return nil }
        if rep.penaltyAllow?.tryAcquire(now: now) == true { return nil }
        rep.refusedInBox += 1
        if box.extendOnRetry { rep.penaltyUntil = now &+ c.provider.penaltyNanos }
        if let n = box.escalateAfter, let e = box.escalateReply, rep.refusedInBox >= n {
            rep.permanent = true
            return refuse(phase, .escalated, e, c, rcpt: rcpt, penalty: nil, now: now)
        }
        return refuse(phase, .penaltyBox, reply, c, rcpt: rcpt, penalty: nil, now: now)
    }

    /// Counts the refusal and renders it; `penalty` is the sender (IP or
    /// domain) whose box the refusal arms, when the limit says `penalty`.
    func refuse(_ phase: SinkPhase, _ reason: SinkReason, _ template: SinkReplyTemplate, _ c: SinkConnection,
                rcpt: String?, penalty: SinkReputation?, now: UInt64) -> SinkDecision {
        let s = c.ipState
        if let rep = penalty { arm(rep, c.provider, now: now) }
        let permanent = template.code >= 500
        switch phase {
        case .greeting, .helo:
            s.counters.sessionsRefused.add(reason)
        case .mail, .data:
            if permanent { s.counters.messagesRejected.add(reason) } else { s.counters.messagesDeferred.add(reason) }
        case .rcpt:
            if permanent { s.counters.recipientsRejected.add(reason) } else { s.counters.recipientsDeferred.add(reason) }
        }
        if template.silent { return .drop }
        return .reply(render(template, c, rcpt: rcpt, reason: reason))
    }

    /// Substitutes the placeholders; a `code-` reply gets the provider's
    /// `reply-suffix` at the end of its last line (Gmail's `<id> - gsmtp`).
    public func render(_ t: SinkReplyTemplate, _ c: SinkConnection, rcpt: String?, reason: SinkReason) -> SinkRenderedReply {
        var lines = t.lines.map { fill($0, c, rcpt: rcpt) }
        if t.continued, let suffix = c.provider.profile.replySuffix {
            // Gmail's shape: the text folded into lines of about 70 columns,
            // the suffix at the end of the last one.
            let text = (lines + [fill(suffix, c, rcpt: rcpt)]).filter { !$0.isEmpty }.joined(separator: " ")
            lines = SinkPolicy.fold(text, width: SinkPolicy.foldWidth)
        }
        return SinkRenderedReply(code: t.code, enhanced: t.enhanced, lines: lines, close: t.close, reason: reason)
    }

    static let foldWidth = 70

    /// Splits `text` at spaces into lines of at most `width` characters (a
    /// longer word gets a line of its own); joined with spaces they give `text` back.
    static func fold(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: false) {
            if line.isEmpty {
                line = String(word)
            } else if line.count + 1 + word.count <= width {
                line += " " + word
            } else {
                lines.append(line)
                line = String(word)
            }
        }
        lines.append(line)
        return lines
    }

    nonisolated(unsafe) static let utcFormatter: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()

    /// `{ip} {rcpt} {local} {domain} {sender} {sender-domain} {host} {session} {utc}`.
    func fill(_ line: String, _ c: SinkConnection, rcpt: String?) -> String {
        guard line.contains("{") else { return line }
        let profile = c.provider.profile
        let r = rcpt ?? ""
        let parts = r.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let local = parts.first.map(String.init) ?? ""
        let domain = parts.count > 1 ? String(parts[1]) : (profile.domains.first ?? "")
        var out = line.replacingAll("{ip}", c.ip)
            .replacingAll("{rcpt}", r)
            .replacingAll("{local}", local)
            .replacingAll("{domain}", domain)
            .replacingAll("{sender-domain}", SinkPolicy.domain(of: c.sender))
            .replacingAll("{sender}", c.sender)
            .replacingAll("{host}", profile.hostname)
            .replacingAll("{session}", c.sessionID)
        if out.contains("{utc}") {
            out = out.replacingAll("{utc}", SinkPolicy.utcFormatter.string(from: Date()))
        }
        return out
    }

    /// The lower-case domain of `sender` ("" for the null sender).
    static func domain(of sender: String) -> String {
        guard let at = sender.utf8.lastIndex(of: UInt8(ascii: "@")) else { return "" }
        return String(sender[sender.index(after: at)...]).lowercased()
    }

    /// `450-anything` → 450; `550` → 550; nil if the local part does not start with a reply code.
    static func scriptedCode(_ local: Substring.UTF8View) -> Int? {
        var it = local.makeIterator()
        var v = 0
        for _ in 0..<3 {
            guard let b = it.next(), b >= 48, b <= 57 else { return nil }
            v = v * 10 + Int(b - 48)
        }
        if let sep = it.next(), sep != UInt8(ascii: "-"), sep != UInt8(ascii: "_"), sep != UInt8(ascii: ".") { return nil }
        guard (200...599).contains(v) else { return nil }
        return v
    }
}


extension String {
    func replacingAll(_ target: String, _ replacement: String) -> String {
        guard !target.isEmpty, self.contains(target) else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

extension RateLimiter {
    /// A GCRA limiter with `intervalNanos` between events (already time-scaled).
    init(intervalNanos: UInt64, burst: Int) {
        let ns = Int64(clamping: max(1, intervalNanos))
        self.init(rate: .limited(count: 1, per: .nanoseconds(ns)), burst: burst)
    }
}
