/// What the resolver keeps from one answer: the records it asked for, or a
/// negative result (RFC 2308). Internal to the resolver; one cache per loop.
struct DNSResolverRecord: Hashable, Sendable {
    enum Data: Hashable, Sendable {
        case mx(preference: UInt16, exchange: String)
        /// 4 bytes (A) or 16 bytes (AAAA).
        case address([UInt8])
        case cname(String)
    }
    /// Owner name, lowercase, no trailing dot.
    var name: String
    var ttl: UInt32
    var data: Data
}

/// The record types the resolver asks for.
enum DNSResolverQueryType: UInt16, Hashable, Sendable {
    case a = 1
    case cname = 5
    case mx = 15
    case aaaa = 28
}

struct DNSCacheKey: Hashable, Sendable {
    var name: String
    var type: DNSResolverQueryType
}

enum DNSCacheValue: Sendable {
    /// The answer section's records (and the CNAME chain, if any).
    case records([DNSResolverRecord])
    /// NOERROR with nothing of the asked type.
    case noData
    case nxdomain
}

/// A TTL cache keyed by (name, type), in loop time (monotonic ns). Positive
/// entries live for the smallest TTL of their records, negative ones for the
/// SOA's negative TTL (or a default), both capped. Bounded: expired entries
/// are swept when it is full, then the oldest half by insertion is dropped.
struct DNSCache {
    struct Entry {
        var value: DNSCacheValue
        var expires: UInt64
        var inserted: UInt64
    }

    var maxEntries: Int
    var maxTTL: UInt32
    private(set) var entries: [DNSCacheKey: Entry] = [:]

    init(maxEntries: Int, maxTTL: UInt32) {
        self.maxEntries = max(1, maxEntries)
        self.maxTTL = maxTTL
    }

    var count: Int { entries.count }

    func lookup(_ key: DNSCacheKey, now: UInt64) -> DNSCacheValue? {
        guard let e = entries[key], e.expires > now else { return nil }
        return e.value
    }

    /// Stores `value` for `ttl` seconds (0 is not cached).
    mutating func store(_ key: DNSCacheKey, _ value: DNSCacheValue, ttl: UInt32, now: UInt64) {
        let t = min(ttl, maxTTL)
        guard t > 0 else { entries[key] = nil; return }
        if entries.count >= maxEntries && entries[key] == nil { makeRoom(now: now) }
        entries[key] = Entry(value: value, expires: now &+ UInt64(t) * 1_000_000_000, inserted: now)
    }

    mutating func removeAll() { entries.removeAll() }

    private mutating func makeRoom(now: UInt64) {
        entries = entries.filter { $0.value.expires > now }
        if entries.count >= maxEntries {
            let sorted = entries.sorted { $0.value.inserted < $1.value.inserted }
            for (k, _) in sorted.prefix(max(1, sorted.count / 2)) { entries[k] = nil }
        }
    }
}
