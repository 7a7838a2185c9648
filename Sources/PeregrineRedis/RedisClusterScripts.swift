/// The Lua scripts behind the cluster's shared state. Each runs atomically in
/// Redis and reads Redis's own clock (`TIME`), so nodes whose clocks
/// disagree still agree on expiries. Redis 7 replicates script effects, so
/// `TIME` in a script is allowed.
///
/// Keys (`P` is the cluster prefix, `SITE` a queue or site name):
/// - `P:conn:SITE` hash node → connections that node holds to SITE;
///   `P:alive:SITE` sorted set node → expiry (ms): a node's leases count only
///   while its entry lives, and it renews them all with one call per site per
///   renewal, not one per connection. A node killed with SIGKILL stops
///   renewing; the next caller purges its count once the entry expires.
/// - `P:rate:SITE` the GCRA theoretical arrival time (µs), with a PEXPIRE.
/// - `P:backoff` sorted set queue → end of its backoff (ms): one per cluster.
enum RedisClusterScripts {
    /// KEYS: conn hash, alive zset. ARGV: node, limit, wanted, held, ttl ms.
    /// Records `held` as the node's count (authoritative: heals a lost release),
    /// purges dead nodes, then grants up to `wanted` more within `limit`.
    /// Returns {granted, cluster total after, nodes alive}.
    static let acquire = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local node, limit, wanted, held, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
    local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
    for _, d in ipairs(dead) do
      if d ~= node then redis.call('HDEL', KEYS[1], d) end
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('HSET', KEYS[1], node, held)
    local total = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
    local granted = math.max(0, math.min(wanted, limit - total))
    if granted > 0 then redis.call('HINCRBY', KEYS[1], node, granted) end
    redis.call('ZADD', KEYS[2], now + ttl, node)
    redis.call('PEXPIRE', KEYS[1], ttl * 4)
    redis.call('PEXPIRE', KEYS[2], ttl * 4)
    return {granted, total + granted, redis.call('ZCARD', KEYS[2])}
    """

    /// KEYS: rate key. ARGV: emission interval µs (1/rate), burst tolerance µs, tokens wanted,
    /// and optionally the fewest worth granting (default 1).
    /// GCRA: grants k ≤ wanted tokens such that the theoretical arrival time
    /// stays within the tolerance of now, or none while fewer than the minimum
    /// are due (so nodes sharing a slow rate do not make a round trip per
    /// token). The k-th token granted (from 0) owns the slot start + k × interval
    /// on the cluster's timeline, start being the theoretical arrival time
    /// before the grant: a node spends it no earlier than that, so the
    /// cluster's tokens are spent one interval apart, never as a burst.
    /// Returns {granted, µs until the minimum is due, µs from now to start}.
    static let gcra = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local interval, tolerance, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
    local minimum = tonumber(ARGV[4] or '1')
    local tat = tonumber(redis.call('GET', KEYS[1]) or now)
    if tat < now then tat = now end
    local start = tat
    local granted = math.floor((now + tolerance - tat) / interval)
    if granted > wanted then granted = wanted end
    if granted < minimum then granted = 0 end
    tat = tat + granted * interval
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
    local wait = tat + minimum * interval - tolerance - now
    if wait < 0 then wait = 0 end
    return {granted, wait, start - now}
    """

    /// KEYS: backoff zset. ARGV: queue, duration ms. Extends, never shortens.
    /// Returns the backoff's remaining ms.
    static let publishBackoff = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local ends = now + tonumber(ARGV[2])
    local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or 0)
    if old > ends then ends = old end
    redis.call('ZADD', KEYS[1], ends, ARGV[1])
    return ends - now
    """

    /// KEYS: backoff zset. Drops ended backoffs; returns {queue, remaining ms, ...}.
    static let pollBackoff = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    local out = {}
    local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #live, 2 do
      out[#out + 1] = live[i]
      out[#out + 1] = tonumber(live[i + 1]) - now
    end
    return out
    """
}
