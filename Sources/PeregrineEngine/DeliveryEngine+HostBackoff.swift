import PeregrineIO
import PeregrineSMTP

/// One MX host as one VMTA (one source IP) reaches it.
struct MXHostKey: Hashable {
    let vmta: String
    let address: SocketAddress
}

/// A host whose sessions failed: how many times in a row, and until when no
/// new connection goes to it.
struct MXHostBackoff {
    var failures = 0
    var until: UInt64 = 0
    var reason = ""
}

/// A receiver that fails a session (refuses the connection, closes, times
/// out, answers garbage or a bad code) is backed off like a deferral, never
/// reconnected to in a loop (DESIGN.md principle 8), as PowerMTA puts a
/// queue in retry mode:
/// - the failed MX host gets no new connection from this VMTA for its
///   queue's retry-after interval, the next entry of the list after each
///   further failure (a successful transaction resets it); connections
///   already open when it failed count as the same failure;
/// - the queue's other MX hosts still get its mail;
/// - when no MX host of the queue is left, the queue goes into retry mode:
///   it waits until the first host may be tried again (a `tq` record), and
///   its mail waits in place. A message gets one `t` record, with the real
///   reason, the first time it waits this way; later failed waves touch no
///   message (a `tq` each), except to hand the DSN generator the ones old
///   enough for a delay notice. Mail arriving meanwhile waits too.
/// So a receiver that fails every session sees at most max-smtp-out
/// connections per retry interval, and a dead destination costs one pass
/// over its waiting mail per interval, not a deferral of each message: with
/// a 1M backlog and retry-after 5s, deferring every message each wave kept
/// the daemon busy re-deferring 200k messages a second (issue #18).
extension DeliveryEngine {
    func isUsable(_ host: RouteHost, vmta: String, now: UInt64) -> Bool {
        guard let b = mxBackoff[MXHostKey(vmta: vmta, address: host.address)] else { return true }
        return now >= b.until
    }

    /// The reason the host is backed off (for the records of queues that find it so).
    func backoffReason(_ host: RouteHost, vmta: String) -> String? {
        mxBackoff[MXHostKey(vmta: vmta, address: host.address)]?.reason
    }

    /// A session with `host` failed for `reason`. Returns true for a new
    /// failure (not one of the wave that already backed the host off).
    @discardableResult
    func hostFailed(_ host: RouteHost, vmta: String, queue q: DeliveryQueue, reason: String) -> Bool {
        let now = loop.now
        let key = MXHostKey(vmta: vmta, address: host.address)
        var b = mxBackoff[key] ?? MXHostBackoff()
        let isNew = now >= b.until
        if isNew {
            // A new failure; one of a connection opened before the host was
            // backed off belongs to the failure that backed it off.
            b.failures += 1
            let delay = q.policy.retryAfter(inBackoff: q.isBackoff).delay(afterFailures: b.failures).nanoseconds
            b.until = now &+ delay
        }
        b.reason = reason
        if mxBackoff.count >= 4096 { mxBackoff = mxBackoff.filter { now < $0.value.until } }
        mxBackoff[key] = b
        return isNew
    }

    /// A failed host was passed over for another MX host of the queue: no
    /// message is deferred, but the queue's accounting says which host failed
    /// and why (a `tq` record naming it, as PowerMTA writes one per failed
    /// connection attempt).
    func movedOn(from host: RouteHost, queue q: DeliveryQueue, reason: String) {
        observer.queueDeferred(q, reason: "\(host.name) (\(host.address)): \(reason); trying the next MX host")
    }

    /// A transaction got the host's own replies: it works again.
    func hostWorked(_ host: RouteHost, vmta: String) {
        guard !mxBackoff.isEmpty else { return }
        mxBackoff[MXHostKey(vmta: vmta, address: host.address)] = nil
    }

    /// True when one of `hosts` may take a new connection now.
    func hasUsableHost(_ hosts: [RouteHost], vmta: String) -> Bool {
        let now = loop.now
        return hosts.contains { isUsable($0, vmta: vmta, now: now) }
    }

    /// The ready mail of `q` (of each member of its site) waits in place
    /// for the destination: a `t` record per recipient of an item never
    /// tried or held before (its attempt count becomes 1), and for the rest
    /// a delay-notice check once they are old enough. One pass, nothing moved.
    /// A queue already waiting (`now` inside its suspension) was passed over by
    /// this wave already: the wave's other connections end here too.
    func holdReadyMail(of q: DeliveryQueue, reply: SMTPReply, info: DeliveryAttemptInfo?, now: UInt64) {
        guard q.suspendedUntil <= now else { return }
        let wall = wallClockSeconds()
        for m in q.site?.members ?? [q] {
            m.lastReply = reply.description
            let noticeAge = m.policy.notifyOfDelayEvery.map { $0.components.seconds } ?? .max
            m.updateEachReady { item in
                let message = item.message
                if item.attempts == 0 {
                    item.attempts = 1
                    if message.firstAttemptWall == 0 { message.firstAttemptWall = wall }
                    for r in item.recipients {
                        observer.deferred(message, recipient: r, queue: m, reply: reply, connection: info)
                    }
                } else if wall - message.receivedAtWall >= noticeAge {
                    for r in item.recipients {
                        observer.stillWaiting(message, recipient: r, queue: m, reply: reply, connection: info)
                    }
                }
            }
        }
    }

    /// Every MX host of `q` is backed off: the queue (with every member of
    /// its site) waits until its first host may be tried again, its mail in
    /// place (see the type's comment).
    func deferDestination(_ q: DeliveryQueue, hosts: [RouteHost], vmta: String, reply: SMTPReply, info: DeliveryAttemptInfo?) {
        let now = loop.now
        var until: UInt64 = .max
        for h in hosts {
            if let b = mxBackoff[MXHostKey(vmta: vmta, address: h.address)], b.until > now { until = min(until, b.until) }
        }
        if until == .max { until = now &+ q.policy.retryAfter(inBackoff: q.isBackoff).delay(afterFailures: 1).nanoseconds }
        holdReadyMail(of: q, reply: reply, info: info, now: now)
        q.suspend(until: until, reason: reply.description)
        observer.queueDeferred(q, reason: reply.description)
        kick(q)
    }

    /// The reply a failed session's deferral carries: the receiver's own
    /// when it refused with a 4xx or 5xx, else a local 451 with the reason.
    static func failureReply(_ text: String, remote: SMTPReply? = nil) -> SMTPReply {
        if let r = remote, r.code >= 400 { return r }
        return SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 4, 2), text)
    }
}
