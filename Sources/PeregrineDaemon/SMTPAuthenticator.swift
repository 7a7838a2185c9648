import Foundation
import PeregrineIO
import PeregrineTLS
import PeregrineConfig

/// Credential checks and brute-force defence for SMTP AUTH, shared by every
/// loop (a client's connections land on any loop). A lock per AUTH attempt,
/// never per command.
///
/// - Hashed passwords (PBKDF2, ~0.3 s of CPU at 600,000 iterations) are
///   checked on one serial Dispatch queue, never on an event loop; a login that
///   succeeded is remembered as a keyed SHA-256 of (hash, password), so an
///   injector that opens many connections pays the PBKDF2 cost once per
///   process. The cache holds one entry per configured hash at most.
/// - Failures are counted per client address: the n-th failure is answered
///   after n × `failureDelay` (a loop timer, nothing blocks), and at
///   `lockoutFailures` the address is locked out for `lockoutTime`.
///   The table holds at most `capacity` addresses: when full, entries past
///   their time go first, then the one whose last failure is oldest.
final class SMTPAuthenticator: @unchecked Sendable {
    struct FailureEntry {
        var failures: Int
        var lastFailure: UInt64
        var lockedUntil: UInt64
    }

    enum FailureOutcome: Equatable {
        /// Answer 535 after this many nanoseconds.
        case delay(UInt64)
        /// The address is now locked out: 454 and close.
        case lockedOut
    }

    let capacity: Int
    private let lock = NSLock()
    private var failures: [String: FailureEntry] = [:]
    /// Checks under way per address: many connections sending AUTH at once
    /// would otherwise queue hashes faster than failures are counted.
    private var inFlight: [String: Int] = [:]
    private var verified: [String: [UInt8]] = [:]
    /// Keys the cached digests, so that the cache is useless outside this process.
    private let cacheKey: [UInt8]
    /// One hash at a time: a flood of logins costs at most one core, and the
    /// loops never wait for it (each attempt's answer comes back through `execute`).
    private let hashing = DispatchQueue(label: "peregrine.smtp-auth")

    init(capacity: Int = 4096) {
        self.capacity = capacity
        // /dev/urandom failing leaves a fixed key: the cache still works, it is only less opaque.
        self.cacheKey = randomBytes(32) ?? Array(repeating: 0x5a, count: 32)
    }

    // MARK: Failures

    /// True while `ip` is locked out.
    func isLockedOut(ip: String, now: UInt64) -> Bool {
        lock.withLock { (failures[ip]?.lockedUntil ?? 0) > now }
    }

    /// Counts a failed login from `ip` and says how to answer it.
    func recordFailure(ip: String, now: UInt64, policy: SMTPAuthSettings) -> FailureOutcome {
        let memory = policy.lockoutTime.nanoseconds
        return lock.withLock {
            var entry = failures[ip] ?? FailureEntry(failures: 0, lastFailure: now, lockedUntil: 0)
            if now &- entry.lastFailure > memory && entry.lockedUntil <= now { entry.failures = 0 }
            entry.failures += 1
            entry.lastFailure = now
            if failures[ip] == nil && failures.count >= capacity { evict(now: now, memory: memory) }
            if entry.failures >= policy.lockoutFailures {
                entry.lockedUntil = now &+ memory
                entry.failures = 0
                failures[ip] = entry
                return .lockedOut
            }
            failures[ip] = entry
            return .delay(policy.failureDelay.nanoseconds &* UInt64(entry.failures))
        }
    }

    var trackedAddresses: Int { lock.withLock { failures.count } }

    /// Starts a check for `ip` unless it already has `limit` under way
    /// (then the caller answers 454 without hashing). Pair with `endAttempt`.
    func beginAttempt(ip: String, limit: Int) -> Bool {
        lock.withLock {
            let n = inFlight[ip, default: 0]
            guard n < limit else { return false }
            inFlight[ip] = n + 1
            return true
        }
    }

    func endAttempt(ip: String) {
        lock.withLock {
            let n = inFlight[ip, default: 1] - 1
            inFlight[ip] = n > 0 ? n : nil
        }
    }

    /// Called with the lock held and the table full.
    private func evict(now: UInt64, memory: UInt64) {
        let before = failures.count
        failures = failures.filter { $0.value.lockedUntil > now || now &- $0.value.lastFailure <= memory }
        if failures.count < before { return }
        if let oldest = failures.min(by: { $0.value.lastFailure < $1.value.lastFailure })?.key {
            failures.removeValue(forKey: oldest)
        }
    }

    // MARK: Credentials

    /// Checks `password` against `user` (nil: no such user, which costs the
    /// same hashing as a wrong password). `done` runs on `loop`.
    func verify<Loop: EventLoop>(user: SMTPUserSettings?, password: String, on loop: Loop,
                                 _ done: @escaping (Bool) -> Void) {
        let bytes = Array(password.utf8)
        guard let user else {
            let reply = LoopConfined(done)
            hashing.async { _ = Self.decoy.matches(bytes); loop.execute { reply.value(false) } }
            return
        }
        switch user.secret {
        case .plainDigest(let digest):
            done(constantTimeEqual(sha256(bytes), digest))
        case .hashed(let hash):
            let cacheSlot = hash.encoded
            let fingerprint = sha256(cacheKey + Array(cacheSlot.utf8) + [0] + bytes)
            let cached = lock.withLock { verified[cacheSlot] }
            if let cached, constantTimeEqual(cached, fingerprint) {
                done(true)
                return
            }
            let reply = LoopConfined(done)
            hashing.async { [self] in
                let ok = hash.matches(bytes)
                if ok {
                    lock.withLock {
                        if verified.count >= capacity { verified.removeAll() }
                        verified[cacheSlot] = fingerprint
                    }
                }
                loop.execute { reply.value(ok) }
            }
        }
    }

    /// What an unknown user's password is hashed against, so that the reply
    /// time does not tell which user names exist.
    static let decoy = PasswordHash(iterations: PasswordHash.defaultIterations,
                                    salt: Array(repeating: 0, count: PasswordHash.saltLength),
                                    hash: Array(repeating: 0, count: PasswordHash.hashLength))
}

/// `max-msg-rate` in `<source>`: one GCRA limiter per login or source block
/// (so the table is bounded by the config), shared by every loop under a lock
/// taken once per MAIL. A reload that changes a rate starts that key afresh.
final class SourceRateLimits: @unchecked Sendable {
    private let lock = NSLock()
    private var limiters: [String: RateLimiter] = [:]

    func tryAcquire(_ key: String, rate: Rate, now: UInt64) -> Bool {
        lock.withLock {
            var limiter = limiters[key].flatMap { $0.rate == rate ? $0 : nil } ?? RateLimiter(rate: rate)
            let ok = limiter.tryAcquire(now: now)
            if limiters.count > 100_000 { limiters.removeAll() }   // names from reloads long gone
            limiters[key] = limiter
            return ok
        }
    }
}
