import Testing
@testable import PeregrineDaemon

/// The per-address failure table of SMTP AUTH: delays grow with the count,
/// the lockout starts at the limit and ends after its time, and the table's
/// size stays bounded whatever the number of addresses.
@Suite struct SMTPAuthenticatorTests {
    static var policy: SMTPAuthSettings {
        var p = SMTPAuthSettings()
        p.failureDelay = .seconds(1)
        p.lockoutFailures = 3
        p.lockoutTime = .seconds(60)
        return p
    }
    static let second: UInt64 = 1_000_000_000

    @Test func delaysGrowThenLockoutThenExpiry() {
        let a = SMTPAuthenticator()
        let t0: UInt64 = 1_000 * Self.second
        #expect(a.recordFailure(ip: "192.0.2.1", now: t0, policy: Self.policy) == .delay(1 * Self.second))
        #expect(a.recordFailure(ip: "192.0.2.1", now: t0 + 1, policy: Self.policy) == .delay(2 * Self.second))
        #expect(!a.isLockedOut(ip: "192.0.2.1", now: t0 + 2))
        // Another address has its own count.
        #expect(a.recordFailure(ip: "192.0.2.2", now: t0 + 2, policy: Self.policy) == .delay(1 * Self.second))
        #expect(a.recordFailure(ip: "192.0.2.1", now: t0 + 3, policy: Self.policy) == .lockedOut)
        #expect(a.isLockedOut(ip: "192.0.2.1", now: t0 + 59 * Self.second))
        #expect(!a.isLockedOut(ip: "192.0.2.2", now: t0 + 4))
        // After the lockout time the address may try again, from a count of zero.
        #expect(!a.isLockedOut(ip: "192.0.2.1", now: t0 + 61 * Self.second))
        #expect(a.recordFailure(ip: "192.0.2.1", now: t0 + 62 * Self.second, policy: Self.policy) == .delay(1 * Self.second))
    }

    @Test func failuresAreForgottenAfterTheLockoutTime() {
        let a = SMTPAuthenticator()
        let t0: UInt64 = 5 * Self.second
        _ = a.recordFailure(ip: "198.51.100.1", now: t0, policy: Self.policy)
        _ = a.recordFailure(ip: "198.51.100.1", now: t0 + 1, policy: Self.policy)
        #expect(a.recordFailure(ip: "198.51.100.1", now: t0 + 120 * Self.second, policy: Self.policy) == .delay(1 * Self.second))
    }

    @Test func attemptsUnderWayAreCappedPerAddress() {
        let a = SMTPAuthenticator()
        #expect(a.beginAttempt(ip: "192.0.2.7", limit: 2) && a.beginAttempt(ip: "192.0.2.7", limit: 2))
        #expect(!a.beginAttempt(ip: "192.0.2.7", limit: 2))
        #expect(a.beginAttempt(ip: "192.0.2.8", limit: 2))
        a.endAttempt(ip: "192.0.2.7")
        #expect(a.beginAttempt(ip: "192.0.2.7", limit: 2))
    }

    @Test func tableIsBounded() {
        let a = SMTPAuthenticator(capacity: 64)
        var now: UInt64 = Self.second
        for i in 0..<10_000 {
            now += 1
            _ = a.recordFailure(ip: "10.\(i / 65536).\((i / 256) % 256).\(i % 256)", now: now, policy: Self.policy)
            #expect(a.trackedAddresses <= 64)
        }
        // The newest addresses are the ones kept.
        #expect(a.recordFailure(ip: "10.0.39.15", now: now + 1, policy: Self.policy) == .delay(2 * Self.second))
    }
}
