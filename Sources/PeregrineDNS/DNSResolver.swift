import PeregrineIO

/// The MTA's own DNS client: MX resolution for routing, over the loop's UDP.
///
/// - Queries go to `options.servers` (`dns-server` lines, else /etc/resolv.conf),
///   one server per attempt in turn, with a random 16-bit id per query.
/// - A response is accepted only from the server it was sent to, with the
///   query's id and question (name and type).
/// - Each attempt waits `timeout`; after `attempts` tries the lookup fails
///   with `.timedOut` (transient). SERVFAIL/REFUSED move on to the next attempt.
/// - Answers are cached by TTL (positive, and NXDOMAIN/NODATA by the SOA's
///   negative TTL, RFC 2308); concurrent lookups of one name share one query.
/// - `resolveMX` returns the exchangers in preference order (equal
///   preferences shuffled, RFC 5321 §5.1) with their A addresses: taken from
///   the additional section when present, else asked for. A domain without
///   MX falls back to its own A records (the implicit MX), unless
///   `fallbackToA` is false (`bounce-upon-no-mx`).
///
/// One resolver per loop (shared-nothing); create it, call it and close it on
/// that loop's thread. Callbacks run on that thread, and run before the call
/// returns when the answer is cached.
///
/// Not yet: TCP fallback for truncated answers (the usable part of a
/// truncated answer is used), AAAA for exchangers, DNSSEC.
public final class DNSResolver<Loop: EventLoop> {
    public struct Options {
        public var servers: [SocketAddress]
        /// Per attempt, in nanoseconds.
        public var timeout: UInt64
        /// Tries per query, across the servers in turn.
        public var attempts: Int
        public var maxCacheEntries: Int
        /// Upper bound on any TTL, in seconds.
        public var maxTTL: UInt32
        /// Negative TTL when the answer carries no SOA, in seconds.
        public var defaultNegativeTTL: UInt32
        /// Shuffle exchangers of equal preference (RFC 5321 §5.1). Tests turn it off.
        public var shuffleEqualPreference: Bool

        public init(servers: [SocketAddress] = DNSServers.fromResolvConf(), timeout: UInt64 = 2_000_000_000,
                    attempts: Int = 3, maxCacheEntries: Int = 100_000, maxTTL: UInt32 = 86_400,
                    defaultNegativeTTL: UInt32 = 300, shuffleEqualPreference: Bool = true) {
            self.servers = servers; self.timeout = timeout; self.attempts = max(1, attempts)
            self.maxCacheEntries = maxCacheEntries; self.maxTTL = maxTTL
            self.defaultNegativeTTL = defaultNegativeTTL; self.shuffleEqualPreference = shuffleEqualPreference
        }
    }

    /// Counters for `/status` and `/metrics`.
    public struct Statistics: Hashable, Sendable {
        public var queriesSent = 0
        public var responses = 0
        public var cacheHits = 0
        public var timeouts = 0
        public var ignoredResponses = 0
    }

    public let loop: Loop
    public let options: Options
    public private(set) var statistics = Statistics()

    private var cache: DNSCache
    private var transports: [Int32: Transport] = [:]     // by address family
    private var pendingByID: [UInt16: PendingQuery] = [:]
    private var pendingByKey: [DNSCacheKey: PendingQuery] = [:]
    private var rng = SystemRandomNumberGenerator()
    private var closed = false
    private var nextServer = 0

    /// Opens the UDP socket(s). Call on the loop's thread.
    public init(loop: Loop, options: Options) throws(IOError) {
        self.loop = loop
        self.options = options
        self.cache = DNSCache(maxEntries: options.maxCacheEntries, maxTTL: options.maxTTL)
        guard !options.servers.isEmpty else {
            throw IOError(.invalidArgument("no DNS servers configured"), "dns")
        }
        for server in options.servers where transports[server.family] == nil {
            let any = server.family == AF_INET6 ? try SocketAddress(ip: "::", port: 0)
                                                : try SocketAddress(ip: "0.0.0.0", port: 0)
            let socket = try loop.openUDP(boundTo: any)
            let t = Transport(socket: socket)
            transports[server.family] = t
            startReceive(t)
        }
    }

    /// Fails every lookup in flight with `.shutdown` and closes the sockets.
    public func close() {
        guard !closed else { return }
        closed = true
        for t in transports.values { loop.close(t.socket) }
        let pending = Array(pendingByID.values)
        pendingByID.removeAll()
        pendingByKey.removeAll()
        for q in pending {
            if let timer = q.timer { loop.cancelTimer(timer) }
            q.finish(.failure(.shutdown))
        }
    }

    /// Drops every cached answer (after a `reload`, or from a management action).
    public func flushCache() { cache.removeAll() }
    public var cachedEntryCount: Int { cache.count }

    // MARK: Public lookups

    /// The mail exchangers of `domain` in preference order, with addresses.
    public func resolveMX(_ domain: String, fallbackToA: Bool = true,
                          _ done: @escaping (Result<[MXHost], DNSResolutionError>) -> Void) {
        // An address literal ("[192.0.2.1]") needs no DNS.
        if domain.hasPrefix("["), domain.hasSuffix("]") {
            var inner = String(domain.dropFirst().dropLast())
            if inner.lowercased().hasPrefix("ipv6:") { inner = String(inner.dropFirst(5)) }
            if let a = try? SocketAddress(ip: inner, port: 0) {
                done(.success([MXHost(name: domain, preference: 0, addresses: [a])]))
            } else {
                done(.failure(.invalidName(domain)))
            }
            return
        }
        guard let name = DNSResolver.normalize(domain) else { done(.failure(.invalidName(domain))); return }
        lookup(DNSCacheKey(name: name, type: .mx)) { [self] outcome in
            switch outcome {
            case .failure(let e):
                done(.failure(e))
            case .nxdomain:
                done(.failure(.nxdomain(domain: name)))
            case .noData:
                self.fallback(name, fallbackToA, done)
            case .records(let records):
                let names = DNSResolver.chainNames(name, records)
                var mx: [(UInt16, String)] = []
                for r in records where names.contains(r.name) {
                    if case .mx(let pref, let host) = r.data { mx.append((pref, host)) }
                }
                if mx.isEmpty {
                    self.fallback(name, fallbackToA, done)
                } else if mx.count == 1 && mx[0].1.isEmpty {
                    done(.failure(.nullMX(domain: name)))
                } else {
                    self.resolveExchangers(name, mx.filter { !$0.1.isEmpty }, done)
                }
            }
        }
    }

    /// The IPv4 addresses of `host` (following CNAMEs).
    public func resolveA(_ host: String, _ done: @escaping (Result<[SocketAddress], DNSResolutionError>) -> Void) {
        guard let name = DNSResolver.normalize(host) else { done(.failure(.invalidName(host))); return }
        resolveAddresses(name, depth: 0, done)
    }

    // MARK: MX logic

    private func fallback(_ name: String, _ fallbackToA: Bool,
                          _ done: @escaping (Result<[MXHost], DNSResolutionError>) -> Void) {
        guard fallbackToA else { done(.failure(.noMXRecords(domain: name))); return }
        resolveAddresses(name, depth: 0) { result in
            switch result {
            case .success(let addrs):
                done(.success([MXHost(name: name, preference: 0, addresses: addrs)]))
            case .failure(.nxdomain):
                done(.failure(.nxdomain(domain: name)))
            case .failure(let e):
                done(.failure(e))
            }
        }
    }

    private func resolveExchangers(_ domain: String, _ mx: [(UInt16, String)],
                                   _ done: @escaping (Result<[MXHost], DNSResolutionError>) -> Void) {
        // Distinct hosts, each at its best preference.
        var best: [String: UInt16] = [:]
        var order: [String] = []
        for (pref, host) in mx {
            if let p = best[host] { best[host] = min(p, pref) } else { best[host] = pref; order.append(host) }
        }
        var results: [String: Result<[SocketAddress], DNSResolutionError>] = [:]
        var remaining = order.count
        var finished = false
        let complete = { [self] in
            guard !finished, remaining == 0 else { return }
            finished = true
            var hosts: [MXHost] = []
            var transient: DNSResolutionError? = nil
            for host in order {
                switch results[host] {
                case .success(let addrs)?:
                    if !addrs.isEmpty { hosts.append(MXHost(name: host, preference: best[host] ?? 0, addresses: addrs)) }
                case .failure(let e)?:
                    if !e.isPermanent, transient == nil { transient = e }
                case nil:
                    break
                }
            }
            if hosts.isEmpty {
                done(.failure(transient ?? .noAddressRecords(domain: domain)))
                return
            }
            done(.success(self.ordered(hosts)))
        }
        for host in order {
            resolveAddresses(host, depth: 0) { r in
                results[host] = r
                remaining -= 1
                complete()
            }
        }
    }

    /// Sorted by preference; ties shuffled unless turned off (then kept in answer order).
    private func ordered(_ hosts: [MXHost]) -> [MXHost] {
        var groups: [UInt16: [MXHost]] = [:]
        for h in hosts { groups[h.preference, default: []].append(h) }
        var out: [MXHost] = []
        out.reserveCapacity(hosts.count)
        for pref in groups.keys.sorted() {
            var g = groups[pref] ?? []
            if options.shuffleEqualPreference && g.count > 1 { g.shuffle(using: &rng) }
            out += g
        }
        return out
    }

    private func resolveAddresses(_ name: String, depth: Int,
                                  _ done: @escaping (Result<[SocketAddress], DNSResolutionError>) -> Void) {
        guard depth < 8 else { done(.failure(.cnameLoop(domain: name))); return }
        lookup(DNSCacheKey(name: name, type: .a)) { [self] outcome in
            switch outcome {
            case .failure(let e): done(.failure(e))
            case .nxdomain: done(.failure(.nxdomain(domain: name)))
            case .noData: done(.failure(.noAddressRecords(domain: name)))
            case .records(let records):
                let names = DNSResolver.chainNames(name, records)
                var addrs: [SocketAddress] = []
                for r in records where names.contains(r.name) {
                    if case .address(let bytes) = r.data, let a = DNSResolver.socketAddress(bytes) { addrs.append(a) }
                }
                let target = DNSResolver.chainEnd(name, records)
                if !addrs.isEmpty {
                    done(.success(addrs))
                } else if target != name {
                    self.resolveAddresses(target, depth: depth + 1, done)
                } else {
                    done(.failure(.noAddressRecords(domain: name)))
                }
            }
        }
    }

    // MARK: Queries and the cache

    enum Outcome {
        case records([DNSResolverRecord])
        case noData
        case nxdomain
        case failure(DNSResolutionError)
    }

    final class PendingQuery {
        let key: DNSCacheKey
        var id: UInt16 = 0
        var attempt = 0
        var server: SocketAddress
        var timer: TimerHandle?
        var waiters: [(Outcome) -> Void] = []
        var lastRcode: Int? = nil
        var wasTruncated = false
        init(key: DNSCacheKey, server: SocketAddress) { self.key = key; self.server = server }
        func finish(_ o: Outcome) {
            let w = waiters
            waiters = []
            for f in w { f(o) }
        }
    }

    final class Transport {
        let socket: Socket
        let buffer: UnsafeMutableRawBufferPointer
        init(socket: Socket) {
            self.socket = socket
            self.buffer = .allocate(byteCount: 65_535, alignment: 8)
        }
    }

    private func lookup(_ key: DNSCacheKey, _ done: @escaping (Outcome) -> Void) {
        if let cached = cache.lookup(key, now: loop.now) {
            statistics.cacheHits += 1
            switch cached {
            case .records(let r): done(.records(r))
            case .noData: done(.noData)
            case .nxdomain: done(.nxdomain)
            }
            return
        }
        guard !closed else { done(.failure(.shutdown)); return }
        if let q = pendingByKey[key] {
            q.waiters.append(done)
            return
        }
        let q = PendingQuery(key: key, server: options.servers[nextServer % options.servers.count])
        q.waiters.append(done)
        pendingByKey[key] = q
        q.id = freshID()
        pendingByID[q.id] = q
        sendAttempt(q)
    }

    private func freshID() -> UInt16 {
        while true {
            let id = UInt16.random(in: 0...UInt16.max, using: &rng)
            if pendingByID[id] == nil { return id }
        }
    }

    private func sendAttempt(_ q: PendingQuery) {
        q.server = options.servers[(nextServer + q.attempt) % options.servers.count]
        guard let packet = DNSResolverWire.encodeQuery(id: q.id, name: q.key.name, type: q.key.type),
              let transport = transports[q.server.family] else {
            complete(q, .failure(.invalidName(q.key.name)))
            return
        }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(packet.count, 1), alignment: 8)
        packet.withUnsafeBytes { out.copyMemory(from: $0) }
        statistics.queriesSent += 1
        loop.sendDatagram(transport.socket, to: q.server, UnsafeRawBufferPointer(rebasing: out[0..<packet.count])) { _ in
            // A failed send is retried by the attempt timer like a lost datagram.
            out.deallocate()
        }
        q.timer = loop.scheduleTimer(after: options.timeout) { [weak self, weak q] in
            guard let self, let q, self.pendingByID[q.id] === q else { return }
            q.timer = nil
            self.retryOrFail(q, timedOut: true)
        }
    }

    private func retryOrFail(_ q: PendingQuery, timedOut: Bool) {
        if timedOut { statistics.timeouts += 1 }
        q.attempt += 1
        if q.attempt < options.attempts {
            sendAttempt(q)
            return
        }
        if let rcode = q.lastRcode {
            complete(q, .failure(.serverFailure(domain: q.key.name, rcode: rcode)))
        } else if q.wasTruncated {
            complete(q, .failure(.truncated(domain: q.key.name)))
        } else {
            complete(q, .failure(.timedOut(domain: q.key.name, attempts: q.attempt)))
        }
    }

    private func complete(_ q: PendingQuery, _ outcome: Outcome) {
        if let t = q.timer { loop.cancelTimer(t); q.timer = nil }
        if pendingByID[q.id] === q { pendingByID[q.id] = nil }
        if pendingByKey[q.key] === q { pendingByKey[q.key] = nil }
        q.finish(outcome)
    }

    private func startReceive(_ t: Transport) {
        loop.receiveDatagram(t.socket, into: t.buffer) { [weak self] result in
            guard let self, !self.closed else {
                t.buffer.deallocate()
                return
            }
            switch result {
            case .success(let (n, from)):
                self.handle(UnsafeRawBufferPointer(rebasing: t.buffer[0..<n]), from: from)
                self.startReceive(t)
            case .failure(let e):
                if e.isCancelled {
                    t.buffer.deallocate()
                } else {
                    // ICMP errors (ECONNREFUSED) and the like: the attempt timer retries.
                    self.startReceive(t)
                }
            }
        }
    }

    private func handle(_ bytes: UnsafeRawBufferPointer, from: SocketAddress) {
        guard let r = DNSResolverWire.decodeResponse(bytes), let q = pendingByID[r.id],
              q.server == from, r.questionName == q.key.name, r.questionType == q.key.type.rawValue else {
            statistics.ignoredResponses += 1
            return
        }
        statistics.responses += 1
        let now = loop.now
        switch r.rcode {
        case 0:
            // Additional-section addresses (the MX hosts' glue) go to the cache as A answers.
            storeAdditional(r.additional, now: now)
            let names = DNSResolver.chainNames(q.key.name, r.answers)
            let relevant = r.answers.filter { names.contains($0.name) }
            let hasAsked = relevant.contains { rec in
                switch (rec.data, q.key.type) {
                case (.mx, .mx), (.address, .a), (.address, .aaaa): return true
                default: return false
                }
            }
            if relevant.isEmpty || (!hasAsked && DNSResolver.chainEnd(q.key.name, relevant) == q.key.name) {
                if r.truncated {
                    // Nothing usable in a truncated answer; no TCP fallback yet: try again.
                    q.wasTruncated = true
                    if let t = q.timer { loop.cancelTimer(t); q.timer = nil }
                    retryOrFail(q, timedOut: false)
                    return
                }
                cache.store(q.key, .noData, ttl: r.negativeTTL ?? options.defaultNegativeTTL, now: now)
                complete(q, .noData)
            } else {
                let ttl = relevant.map(\.ttl).min() ?? 0
                cache.store(q.key, .records(relevant), ttl: ttl, now: now)
                complete(q, .records(relevant))
            }
        case 3:
            cache.store(q.key, .nxdomain, ttl: r.negativeTTL ?? options.defaultNegativeTTL, now: now)
            complete(q, .nxdomain)
        default:
            // SERVFAIL, REFUSED, FORMERR…: try the next attempt (next server); not cached.
            q.lastRcode = r.rcode
            if let t = q.timer { loop.cancelTimer(t); q.timer = nil }
            retryOrFail(q, timedOut: false)
        }
    }

    private func storeAdditional(_ records: [DNSResolverRecord], now: UInt64) {
        var byName: [String: [DNSResolverRecord]] = [:]
        for r in records {
            if case .address(let b) = r.data, b.count == 4 { byName[r.name, default: []].append(r) }
        }
        for (name, recs) in byName {
            let key = DNSCacheKey(name: name, type: .a)
            if cache.lookup(key, now: now) == nil {
                cache.store(key, .records(recs), ttl: recs.map(\.ttl).min() ?? 0, now: now)
            }
        }
    }

    // MARK: Names

    /// Lowercase, no trailing dot, valid lengths (labels ≤ 63, name ≤ 253); nil otherwise.
    static func normalize(_ name: String) -> String? {
        var n = name.lowercased()
        if n.hasSuffix(".") { n.removeLast() }
        guard !n.isEmpty, n.utf8.count <= 253 else { return nil }
        for label in n.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63 else { return nil }
            guard label.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else { return nil }
        }
        return n
    }

    /// `name` plus the targets of the CNAME chain starting at it within `records`.
    static func chainNames(_ name: String, _ records: [DNSResolverRecord]) -> Set<String> {
        var names: Set<String> = [name]
        var current = name
        for _ in 0..<8 {
            guard let next = records.first(where: { r in
                if case .cname = r.data { return r.name == current }
                return false
            }), case .cname(let target) = next.data, !names.contains(target) else { break }
            names.insert(target)
            current = target
        }
        return names
    }

    /// The last name of the CNAME chain starting at `name`.
    static func chainEnd(_ name: String, _ records: [DNSResolverRecord]) -> String {
        var current = name
        var seen: Set<String> = [name]
        for _ in 0..<8 {
            guard let next = records.first(where: { r in
                if case .cname = r.data { return r.name == current }
                return false
            }), case .cname(let target) = next.data, !seen.contains(target) else { break }
            seen.insert(target)
            current = target
        }
        return current
    }

    static func socketAddress(_ bytes: [UInt8]) -> SocketAddress? {
        if bytes.count == 4 {
            return try? SocketAddress(ip: "\(bytes[0]).\(bytes[1]).\(bytes[2]).\(bytes[3])", port: 0)
        }
        if bytes.count == 16 {
            var parts: [String] = []
            for i in stride(from: 0, to: 16, by: 2) {
                parts.append(String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16))
            }
            return try? SocketAddress(ip: parts.joined(separator: ":"), port: 0)
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
