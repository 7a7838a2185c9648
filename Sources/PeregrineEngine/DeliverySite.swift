import PeregrineConfig

/// The name of an MX site: one VMTA, the sorted set of MX hosts its domains
/// resolved to (name and port), and the TLS settings (so a connection never
/// carries a `require-starttls` domain's mail under a laxer domain's rules).
public struct DeliverySiteKey: Hashable, Sendable, CustomStringConvertible {
    public let vmta: String
    public let hosts: [String]
    let tls: [Bool]

    init(vmta: String, hosts: [RouteHost], policy: DomainSettings) {
        self.vmta = vmta
        self.hosts = Set(hosts.map { "\($0.name.lowercased()):\($0.address.port)" }).sorted()
        self.tls = [policy.useStartTLS, policy.requireStartTLS, policy.tlsVerifyHostname]
    }

    /// e.g. `[mx1.outlook.sink:25,mx2.outlook.sink:25]/vmta1`.
    public var description: String { "[" + hosts.joined(separator: ",") + "]/\(vmta)" }
}

/// Queues rolled up by MX (`mx-rollup yes`) whose site key is the same: one
/// connection budget and one pair of pacers (the shared `throttle`) for all
/// of them, and connections that carry any member's mail, one transaction per
/// domain, taking from the members in turn. The site's limits are the most
/// restrictive of its members' (the receiver's limit is per source IP, so no
/// member's stated limit may be exceeded by the group); retry schedules,
/// bounce-after and recipients per transaction stay per domain.
public final class DeliverySite {
    public let key: DeliverySiteKey
    public let throttle: DeliveryThrottle
    public private(set) var members: [DeliveryQueue] = []
    private var cursor = 0

    init(key: DeliverySiteKey, first: DeliveryQueue, now: UInt64) {
        self.key = key
        self.throttle = DeliveryThrottle(policy: first.policy)
        add(first, now: now)
    }

    func add(_ q: DeliveryQueue, now: UInt64) {
        guard !members.contains(where: { $0 === q }) else { return }
        members.append(q)
        q.join(self, now: now)
        memberPolicyChanged(now: now)
    }

    /// Recomputes the site's limits from its members' settings (join, reload).
    func memberPolicyChanged(now: UInt64) {
        throttle.update(policy: Self.mostRestrictive(members.map(\.policy)), now: now)
    }

    /// Ready items of members that may send (not paused).
    public var readyItems: Int {
        var n = 0
        for q in members where mayTake(from: q) { n += q.readyItems }
        return n
    }

    /// A member gives work unless paused or its own `max-msg-rate` is 0
    /// (which holds that domain only, not the others sharing its MX).
    private func mayTake(from q: DeliveryQueue) -> Bool {
        !q.isPaused && !q.policy.holdsDelivery(inBackoff: throttle.isBackoff)
    }

    func connectionsToOpen(now: UInt64) -> Int {
        throttle.connectionsToOpen(readyItems: readyItems, now: now)
    }

    /// The next item for a connection of the site, from the members in turn
    /// (so one busy domain cannot starve the others), with the queue it is from.
    func take(now: UInt64, messagesOnConnection: Int) -> (DeliveryQueue.Take, DeliveryQueue?) {
        if throttle.mustClose(now: now, messagesOnConnection: messagesOnConnection) { return (.close, nil) }
        guard readyItems > 0 else { return (.idle, nil) }
        if let until = throttle.acquireMessage(now: now) { return (.wait(until: until), nil) }
        let n = members.count
        for step in 0..<n {
            let q = members[(cursor + step) % n]
            guard mayTake(from: q), let item = q.popReady() else { continue }
            cursor = (cursor + step + 1) % n
            return (.item(item), q)
        }
        return (.idle, nil)
    }

    /// Per field, the setting that sends least: lowest connection caps and
    /// message caps, slowest rates, longest backoff. Settings that are not
    /// limits come from the first member.
    static func mostRestrictive(_ all: [DomainSettings]) -> DomainSettings {
        guard var s = all.first else { return DomainSettings() }
        for p in all.dropFirst() {
            s.maxSMTPOut = min(s.maxSMTPOut, p.maxSMTPOut)
            s.backoffMaxSMTPOut = min(s.maxSMTPOut(inBackoff: true), p.maxSMTPOut(inBackoff: true))
            if p.maxMsgPerConnection > 0 {
                s.maxMsgPerConnection = s.maxMsgPerConnection == 0 ? p.maxMsgPerConnection : min(s.maxMsgPerConnection, p.maxMsgPerConnection)
            }
            s.backoffMaxMsgRate = slower(s.maxMsgRate(inBackoff: true), p.maxMsgRate(inBackoff: true))
            s.backoffMaxConnectRate = slower(s.maxConnectRate(inBackoff: true), p.maxConnectRate(inBackoff: true))
            s.maxMsgRate = slower(s.maxMsgRate, p.maxMsgRate)
            s.maxConnectRate = slower(s.maxConnectRate, p.maxConnectRate)
            if let c = p.clusterMaxSMTPOut { s.clusterMaxSMTPOut = min(s.clusterMaxSMTPOut ?? c, c) }
            s.clusterMaxMsgRate = slower(s.clusterMaxMsgRate, p.clusterMaxMsgRate)
            switch (s.backoffToNormalAfter, p.backoffToNormalAfter) {
            case (.some(let a), .some(let b)): s.backoffToNormalAfter = max(a, b)
            default: s.backoffToNormalAfter = nil
            }
            s.backoffToNormalAfterDelivery = s.backoffToNormalAfterDelivery && p.backoffToNormalAfterDelivery
        }
        // A member's rate 0 holds that member (DeliverySite.mayTake), not the site.
        s.maxMsgRateIsZero = false
        s.backoffMaxMsgRateIsZero = false
        return s
    }

    private static func slower(_ a: Rate, _ b: Rate) -> Rate {
        switch (a.emissionIntervalNanos, b.emissionIntervalNanos) {
        case (nil, _): return b
        case (_, nil): return a
        case (.some(let x), .some(let y)): return x >= y ? a : b
        }
    }
}
