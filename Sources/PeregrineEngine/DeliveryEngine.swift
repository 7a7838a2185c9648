#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP

/// The delivery side of one event loop: the queues sharded to this loop, their
/// connections, and the reaction to every reply. Everything runs on `loop`'s
/// thread; work from other loops arrives through `loop.execute`.
public final class DeliveryEngine<Loop: EventLoop> {
    public let loop: Loop
    let policies: DeliveryPolicySource
    let router: DeliveryRouter
    let bodySource: DeliveryBodySource
    unowned let observer: DeliveryObserver

    public private(set) var queues: [QueueKey: DeliveryQueue] = [:]
    /// Pause patterns that also hold queues created later (issue 17: `pause 'hotmail.com/*'`
    /// before any hotmail mail arrived used to match nothing, and the next message went out).
    public private(set) var standingPauses: [String] = []
    /// MX sites of rolled-up queues (mx-rollup yes), by VMTA and resolved MX host set.
    public private(set) var sites: [DeliverySiteKey: DeliverySite] = [:]
    /// Rolled-up queues whose MX hosts are being looked up to find their site.
    private var siteLookups: Set<QueueKey> = []
    /// STARTTLS for delivery: the shared client context and per-MX fallbacks (DeliveryEngine+TLS.swift).
    public let tls = DeliveryTLS()
    /// Called when a reply puts a queue into backoff here (not when the
    /// cluster does): the daemon publishes it to the other nodes (DeliveryEngine+Cluster.swift).
    public var onBackoffEntered: ((DeliveryQueue) -> Void)?
    /// cluster-max-smtp-out and cluster-max-msg-rate, when the daemon is in a cluster (DeliveryEngine+ClusterLimits.swift).
    public var clusterLimits: ClusterLimits?
    var cluster = EngineClusterState()
    private var connections: [ObjectIdentifier: DeliveryConnection<Loop>] = [:]
    /// The same connections by the queue that opened them, so that a kick asks
    /// its own queue's (or site's) idle connections without walking every
    /// connection of the loop.
    private var connectionsByQueue: [ObjectIdentifier: [DeliveryConnection<Loop>]] = [:]
    private var queueTimers: [QueueKey: (at: UInt64, handle: TimerHandle)] = [:]
    /// Source IPs a pattern list disabled, per queue (domain/vmta), until a time (DeliveryEngine+SourceSteering.swift).
    var disabledUntil: [QueueKey: UInt64] = [:]
    /// MX hosts whose sessions failed, per VMTA (DeliveryEngine+HostBackoff.swift).
    var mxBackoff: [MXHostKey: MXHostBackoff] = [:]
    private var expiredScratch: [DeliveryItem] = []
    /// Connects failing for lack of local resources, while they do (DeliveryEngine+LocalShortage.swift).
    var localShortage: LocalShortage?
    /// Connection slots a shared budget reserved for a queue, not yet used (DeliveryEngine+ConnectionBudget.swift).
    var reservedSlots: [ReservedSlotKey: Int] = [:]
    private var stopping = false
    private var stopped: (() -> Void)?

    public init(loop: Loop, policies: DeliveryPolicySource, router: DeliveryRouter, bodySource: DeliveryBodySource,
                observer: DeliveryObserver) {
        self.loop = loop
        self.policies = policies
        self.router = router
        self.bodySource = bodySource
        self.observer = observer
    }

    public var connectionCount: Int { connections.count }
    var openConnections: Dictionary<ObjectIdentifier, DeliveryConnection<Loop>>.Values { connections.values }
    var isStopping: Bool { stopping }
    /// How long a connection with nothing to send stays open for new work before QUIT.
    public var idleTimeout: UInt64 = 2_000_000_000
    /// Bodies of at least this many bytes stored in wire form go out of a
    /// plain connection straight from the spool file (DeliveryConnection.bodyRangeRead).
    public var fileBodyMinimumSize = DeliveryBodyRange.defaultMinimumSize
    /// Bodies handed to the socket as a file range so far (`/metrics`).
    public internal(set) var bodiesSentFromFile: UInt64 = 0

    // MARK: Work in

    /// Takes a message's recipients for the queues of this loop. `recipients`
    /// are indexes into `message.recipients`, all with pending state; they are
    /// grouped per domain into transactions of at most max-rcpt-per-transaction.
    public func submit(_ message: QueuedMessage, recipients: [Int], vmta: String, notBefore: UInt64? = nil) {
        var byDomain: [String: [Int]] = [:]
        let list = message.recipients
        for r in recipients { byDomain[list.domain(r), default: []].append(r) }
        for (domain, rcpts) in byDomain {
            var q = queue(for: QueueKey(domain: policies.queueDomain(for: domain, vmta: vmta), vmta: vmta))
            if let cold = coldQueue(for: q) { q = cold }
            // A pool's disabled member is skipped for this domain.
            if let other = steeringTarget(from: q, for: message, now: loop.now) { q = other }
            // VERP: each recipient has its own return path, so its own transaction.
            let maxRcpt = message.verp ? 1 : max(1, q.policy.maxRcptPerTransaction)
            var start = 0
            while start < rcpts.count {
                let slice = Array(rcpts[start..<min(start + maxRcpt, rcpts.count)])
                let item = DeliveryItem(message: message, recipients: slice)
                if let t = notBefore, t > loop.now { q.delayUntil(item, t) } else { q.enqueue(item) }
                start += maxRcpt
            }
            kick(q)
        }
    }

    /// `max-cold-virtual-mta-msg`: the queue of VMTA `foo-cold` for this
    /// domain while today's count lasts and that VMTA exists.
    private func coldQueue(for q: DeliveryQueue) -> DeliveryQueue? {
        let limit = q.policy.maxColdVirtualMTAMsg
        guard limit > 0, let quota = policies.coldVMTAQuota else { return nil }
        let coldName = q.key.vmta + "-cold"
        guard policies.virtualMTA(named: coldName) != nil,
              quota.take(queue: q.key, limit: limit, day: wallClockSeconds() / 86_400) else { return nil }
        return queue(for: QueueKey(domain: q.key.domain, vmta: coldName))
    }

    public func queue(for key: QueueKey) -> DeliveryQueue {
        if let q = queues[key] { return q }
        let q = DeliveryQueue(key: key, policy: policies.policy(for: key))
        q.patternsSeePositiveReplies = policies.patternsSeePositiveReplies(queue: key)
        if standingPauses.contains(where: { key.matches(pattern: $0) }) { q.isPaused = true }
        queues[key] = q
        return q
    }

    /// Re-reads every queue's policy (config reload) without touching connections.
    public func reloadPolicies() {
        for (key, q) in queues {
            q.update(policy: policies.policy(for: key), now: loop.now)
            q.patternsSeePositiveReplies = policies.patternsSeePositiveReplies(queue: key)
        }
        // Open connections were made under the old settings (route, VMTA, timeouts):
        // each finishes the transaction it is in, then QUITs; new ones use the new settings.
        for c in connections.values { c.retire() }
        for q in queues.values { kick(q) }
    }

    // MARK: Scheduling

    /// Re-evaluates a queue: promote due items, expire old ones, open
    /// connections, wake idle ones, and arm the queue's timer for the next change.
    public func kick(_ q: DeliveryQueue) {
        let now = loop.now
        if q.isBackoff {
            q.checkBackoffExpiry(now: now)
            if !q.isBackoff { observer.queueModeChanged(q, .leftBackoff(reason: "backoff-to-normal-after elapsed")) }
        }
        q.promoteDue(now: now, expired: &expiredScratch)
        if !expiredScratch.isEmpty {
            let expired = expiredScratch
            expiredScratch.removeAll(keepingCapacity: true)
            for item in expired { expire(item, queue: q) }
        }
        if !stopping {
            if let site = q.site {
                scheduleConnections(site, kicked: q, now: now)
            } else if q.policy.mxRollup {
                findSite(for: q, now: now)
            } else {
                scheduleConnections(q, now: now)
            }
        }
        var next = q.nextWakeup(now: now)
        if let b = q.backoffEnds() { next = min(next ?? .max, b) }
        if let t = next { armTimer(q, at: t) }
    }

    private func scheduleConnections(_ q: DeliveryQueue, now: UInt64) {
        // Idle connections take work first; new connections only if still needed.
        // Stop asking once the queue is empty: the rest would only re-arm their
        // idle timers (and an idle connection's timeout runs from its last use).
        if q.readyItems > 0 && q.idleConnections > 0 {
            for c in connectionsByQueue[ObjectIdentifier(q)] ?? [] where c.isIdle {
                c.askForWork()
                if q.readyItems == 0 { break }
            }
        }
        let n = q.connectionsToOpen(now: now)
        if n > 0 { open(n, for: q) }
        else if q.readyItems > 0 && q.connections < q.maxConnections(now: now) && q.isSendable(now: now) {
            // Held back by max-connect-rate: come back when it allows. Only
            // then: when the open connections suffice (all busy, or idle ones
            // were just asked), a finished transaction or a closed connection
            // kicks the queue again, and a timer at `now` would re-kick it on
            // every loop turn (a busy spin; on Dispatch it starved the loop).
            let allowed = q.nextConnectAllowed(now: now)
            if allowed > now { armTimer(q, at: allowed) }
        }
    }

    /// As for a queue, but over the site: its idle connections take any
    /// member's work, and new connections count against the site's budget.
    private func scheduleConnections(_ site: DeliverySite, kicked q: DeliveryQueue, now: UInt64) {
        let t = site.throttle
        let ready = site.readyItems
        if ready > 0 && t.idleConnections > 0 {
            asking: for member in site.members {
                for c in connectionsByQueue[ObjectIdentifier(member)] ?? [] where c.isIdle {
                    c.askForWork()
                    if site.readyItems == 0 { break asking }
                }
            }
        }
        let n = site.connectionsToOpen(now: now)
        if n > 0 {
            // Connection-level settings (timeouts) and routing come from a member with work.
            let lead = site.members.first { $0.readyItems > 0 && !$0.isPaused } ?? q
            open(n, for: lead)
        } else if ready > 0 && t.connections < t.maxConnections(now: now) && t.isOpen(now: now) {
            let allowed = t.nextConnectAllowed(now: now)
            if allowed > now { armTimer(q, at: allowed) }
        }
    }

    /// A rolled-up queue's first kick with work: resolve its MX hosts and
    /// join (or found) the site with the same host set; until then it opens
    /// nothing. DNS failures are handled as when opening a connection.
    private func findSite(for q: DeliveryQueue, now: UInt64) {
        guard q.readyItems > 0, q.isSendable(now: now), !siteLookups.contains(q.key) else { return }
        siteLookups.insert(q.key)
        router.hosts(for: q.key) { [unowned self] result in
            self.siteLookups.remove(q.key)
            switch result {
            case .success(let hosts) where !hosts.isEmpty:
                let key = DeliverySiteKey(vmta: q.key.vmta, hosts: hosts, policy: q.policy)
                if let site = self.sites[key] {
                    site.add(q, now: self.loop.now)
                } else {
                    self.sites[key] = DeliverySite(key: key, first: q, now: self.loop.now)
                }
                self.kick(q)
            case .success:
                self.noMailHost(q, reason: "no mail host for \(q.key.domain)")
            case .failure(.noMailHost(let why)):
                self.noMailHost(q, reason: why)
            case .failure(.temporary(let why)):
                self.deferQueue(q, reason: "DNS: \(why)")
            }
        }
    }

    private func armTimer(_ q: DeliveryQueue, at when: UInt64) {
        let key = q.key
        if let existing = queueTimers[key] {
            if existing.at <= when && existing.at > loop.now { return }
            loop.cancelTimer(existing.handle)
        }
        let delay = when > loop.now ? when - loop.now : 0
        let handle = loop.scheduleTimer(after: delay) { [unowned self] in
            self.queueTimers[key] = nil
            if let q = self.queues[key] { self.kick(q) }
        }
        queueTimers[key] = (when, handle)
    }

    private func open(_ wanted: Int, for q: DeliveryQueue) {
        guard mayAskCluster(q) else { return }
        guard let vmta = policies.virtualMTA(named: q.key.vmta) else {
            // A queue for an unknown VMTA cannot be delivered; hold it and say why.
            q.lastReply = "no virtual-mta named \(q.key.vmta)"
            return
        }
        // total-max-smtp-out and the VMTA's max-smtp-out (shared by every loop).
        // Short of slots the queue waits for one; the connect pacer was already
        // charged for `wanted`, a small overcount only when both limits bind.
        let count = takeConnectionSlots(wanted, for: q)
        guard count > 0 else {
            q.lastReply = "waiting for a connection slot (total-max-smtp-out or the virtual-mta's max-smtp-out)"
            return
        }
        q.connections += count
        // cluster-max-smtp-out: a connection opens only once its lease is granted.
        acquireClusterLeases(count, for: q) { [unowned self] count, leaseSite in
            self.connect(count, for: q, vmta: vmta, leaseSite: leaseSite)
        }
    }

    private func connect(_ count: Int, for q: DeliveryQueue, vmta: VirtualMTA, leaseSite: String?) {
        let slotVMTA = q.key.vmta
        router.hosts(for: q.key) { [unowned self] result in
            switch result {
            case .success(let hosts) where !hosts.isEmpty:
                guard self.hasUsableHost(hosts, vmta: vmta.name) else {
                    // Every MX host failed lately (for another queue of this VMTA): wait like it.
                    q.connections -= count
                    self.giveConnectionSlots(count, vmta: slotVMTA)
                    self.releaseClusterLeases(count, site: leaseSite)
                    let why = hosts.lazy.compactMap { self.backoffReason($0, vmta: vmta.name) }.first ?? "MX hosts backed off"
                    self.deferDestination(q, hosts: hosts, vmta: vmta.name, reply: Self.failureReply(why), info: nil)
                    return
                }
                let config = Self.clientConfiguration(heloName: vmta.hostname, policy: q.policy)
                for _ in 0..<count {
                    let c = DeliveryConnection(engine: self, loop: self.loop, queue: q, vmta: vmta, hosts: hosts,
                                               configuration: config)
                    self.connections[ObjectIdentifier(c)] = c
                    self.connectionsByQueue[ObjectIdentifier(q), default: []].append(c)
                    self.noteClusterLease(c, site: leaseSite)
                    c.start()
                }
            case .success:
                q.connections -= count
                self.giveConnectionSlots(count, vmta: slotVMTA)
                self.releaseClusterLeases(count, site: leaseSite)
                self.noMailHost(q, reason: "no mail host for \(q.key.domain)")
            case .failure(.noMailHost(let why)):
                q.connections -= count
                self.giveConnectionSlots(count, vmta: slotVMTA)
                self.releaseClusterLeases(count, site: leaseSite)
                self.noMailHost(q, reason: why)
            case .failure(.temporary(let why)):
                q.connections -= count
                self.giveConnectionSlots(count, vmta: slotVMTA)
                self.releaseClusterLeases(count, site: leaseSite)
                self.deferQueue(q, reason: "DNS: \(why)")
            }
        }
    }

    /// Every SMTP client timeout from the queue's settings.
    static func clientConfiguration(heloName: String, policy p: DomainSettings) -> SMTPClientConfiguration {
        var config = SMTPClientConfiguration(heloName: heloName)
        config.timeouts.greeting = p.smtpGreetingTimeout.nanoseconds
        config.timeouts.ehlo = p.smtpEHLOTimeout.nanoseconds
        config.timeouts.mail = p.smtpMailFromTimeout.nanoseconds
        config.timeouts.rcpt = p.smtpRcptToTimeout.nanoseconds
        config.timeouts.dataInit = p.smtpDataTimeout.nanoseconds
        config.timeouts.dataBlock = p.dataSendTimeout.nanoseconds
        config.timeouts.dataEnd = p.smtpDataTerminationTimeout.nanoseconds
        config.timeouts.rset = p.smtpRsetTimeout.nanoseconds
        config.timeouts.quit = p.smtpQuitTimeout.nanoseconds
        config.timeouts.startTLS = p.smtpStartTLSTimeout.nanoseconds
        return config
    }

    // MARK: Outcomes

    /// `q` is the queue the item was taken from (on a site's connection, any member).
    func complete(_ item: DeliveryItem, from q: DeliveryQueue, result: SMTPMessageResult, on connection: DeliveryConnection<Loop>,
                  info: DeliveryAttemptInfo?) {
        let now = loop.now
        let message = item.message
        if message.firstAttemptWall == 0 { message.firstAttemptWall = wallClockSeconds() }
        var retry: [Int] = []
        var deliveredCount = 0, bouncedCount = 0
        var forceBounce = false
        // Pattern lists look at every distinct remote reply of the transaction;
        // a 2xx only when the queue's list has a rule for 2xx (most have none).
        var seen: Set<String>?
        // The receiver handled a transaction (a 421 is it declining to): it works.
        if let host = connection.host, result.recipients.contains(where: { !$0.isLocal && $0.reply.code != 421 }) {
            connection.hostReplied = true
            hostWorked(host, vmta: connection.vmta.name)
        }
        for r in result.recipients where !r.isLocal {
            if r.reply.isPositiveCompletion && !q.patternsSeePositiveReplies { continue }
            if seen == nil { seen = [] }
            if seen?.insert(r.reply.description).inserted == true {
                if applyPatterns(r.reply, queue: q, now: now) { forceBounce = true }
            }
        }
        for (k, r) in result.recipients.enumerated() {
            let index = item.recipients[k]
            q.noteReply(r.reply)
            switch r.status {
            case .delivered:
                if message.finish(recipient: index, as: .delivered) {
                    deliveredCount += 1
                    observer.delivered(message, recipient: index, queue: q, reply: r.reply,
                                       connection: info ?? DeliveryAttemptInfo(sourceAddress: nil, destination: connection.hosts[0].address,
                                                                               destinationName: connection.hosts[0].name, esmtp: false))
                }
            case .permanentFailure:
                if message.finish(recipient: index, as: .bounced) {
                    bouncedCount += 1
                    let reply = Self.interpreting553(r.reply, toRecipient: result.rcptReplies[k], policy: q.policy)
                    observer.bounced(message, recipient: index, queue: q, reply: reply,
                                     category: policies.bounceCategory(for: reply), connection: info)
                }
            case .transientFailure:
                if forceBounce && !r.isLocal {
                    if message.finish(recipient: index, as: .bounced) {
                        bouncedCount += 1
                        observer.bounced(message, recipient: index, queue: q, reply: r.reply,
                                         category: policies.bounceCategory(for: r.reply), connection: info)
                    }
                } else {
                    retry.append(index)
                    observer.deferred(message, recipient: index, queue: q, reply: r.reply, connection: info)
                }
            }
        }
        if deliveredCount > 0 {
            let wasBackoff = q.isBackoff
            q.noteDelivered(deliveredCount, now: now)
            if wasBackoff && !q.isBackoff {
                observer.queueModeChanged(q, .leftBackoff(reason: "a delivery succeeded (backoff-to-normal-after-delivery)"))
            }
        }
        if bouncedCount > 0 { q.noteBounced(bouncedCount) }
        if !retry.isEmpty {
            var again = item
            again.recipients = RecipientIndexes(retry)
            if let other = steeringTarget(from: q, for: message, now: now) {
                // This source IP is disabled for the domain: another pool member tries at once.
                again.attempts += 1
                other.enqueue(again)
                kick(other)
            } else {
                q.deferItem(again, now: now)
            }
        }
        if message.isComplete { observer.messageCompleted(message) }
        // A session that failed with this message in flight is closing: the
        // queue is kicked once the failure is accounted for (connectionClosed),
        // not before, or a new connection would go to the failed host at once.
        if !connection.session.isClosed { kick(q) }
    }

    /// Applies pattern-list actions; returns true when the reply must bounce.
    private func applyPatterns(_ reply: SMTPReply, queue q: DeliveryQueue, now: UInt64) -> Bool {
        var bounce = false
        for action in policies.actions(for: reply, queue: q.key) {
            switch action {
            case .backoff:
                if !q.isBackoff {
                    q.enterBackoff(now: now)
                    observer.queueModeChanged(q, .enteredBackoff(reason: "reply matched a pattern list: \(reply)"))
                    onBackoffEntered?(q)
                }
            case .normal:
                if q.isBackoff {
                    q.leaveBackoff(now: now)
                    observer.queueModeChanged(q, .leftBackoff(reason: "reply matched a pattern list: \(reply)"))
                }
            case .suspend(let d):
                let until = now &+ d.nanoseconds
                if until > q.suspendedUntil {
                    observer.queueModeChanged(q, .suspended(seconds: d.nanoseconds / 1_000_000_000, reason: reply.description))
                }
                q.suspend(until: until, reason: reply.description)
            case .disableSourceIP(let d):
                disableSource(of: q, for: d?.nanoseconds ?? 3_600_000_000_000, reply: reply, now: now)
            case .bounce: bounce = true
            }
        }
        return bounce
    }

    func bodyUnreadable(_ item: DeliveryItem, from q: DeliveryQueue, error: IOError) {
        // Keep the recipients: a read error may be transient (EIO, ENOMEM); retry on schedule.
        q.lastReply = "local: cannot read the spooled body: \(error)"
        q.deferItem(item, now: loop.now)
    }

    func connectionClosed(_ c: DeliveryConnection<Loop>, reason: SMTPClientCloseReason?, connectFailure: String?, everReady: Bool) {
        let q = c.queue
        q.connections -= 1
        giveConnectionSlots(1, vmta: q.key.vmta)
        connectionLeaseEnded(c)
        let now = loop.now
        if stopping { checkStopped(); return }
        if let failure = connectFailure {
            if c.failedLocally { connectFailedLocally(q, reason: failure); return }
            // No host took the connection (each one tried is backed off already).
            q.lastReply = failure
            if hasUsableHost(c.hosts, vmta: c.vmta.name) { kick(q); return }
            let reply = SMTPReply(code: 451, enhancedCode: EnhancedStatusCode(4, 4, 1), failure)
            deferDestination(q, hosts: c.hosts, vmta: c.vmta.name, reply: reply, info: c.attemptInfo)
            return
        }
        var failure: SMTPReply?
        switch reason {
        case .greetingRefused(let r), .heloRefused(let r), .serviceClosing(let r):
            q.lastReply = r.description
            if applyPatterns(r, queue: q, now: now) { /* bounce applies to messages, none in flight here */ }
            if case .greetingRefused? = reason, r.code / 100 == 5, q.policy.bounceUpon5xxGreeting {
                // The receiver refuses service outright: what waits for it bounces now.
                bounceWaiting(q, reply: r, category: policies.bounceCategory(for: r))
                kick(q)
                return
            }
            let mxUnavailable = r.code == 421 && q.policy.smtp421MeansMXUnavailable
            if !everReady && r.code / 100 == 4 && q.connections > 0 && !mxUnavailable {
                // Refused while other connections of the queue are open (too many
                // connections at the greeting): keep those working and open no more
                // for a while. Suspending here would make the working connections
                // quit too, and every reconnect wave would be refused again (livelock).
                let retry = q.policy.retryAfter.delay(afterFailures: 1).nanoseconds
                q.limitConnections(to: q.connections, until: now &+ retry)
            } else if !everReady && r.code / 100 == 4 && !mxUnavailable, let host = c.host, hasOtherConnection(to: host, than: c) {
                // Refused while the receiver works for other queues of this
                // source IP (its limit counts them all): it limits, it does not
                // fail. Wait briefly rather than back the host off for every queue.
                let retry = q.policy.retryAfter.delay(afterFailures: 1).nanoseconds
                q.suspend(until: now &+ min(retry, 5_000_000_000), reason: r.description)
            } else if !everReady || mxUnavailable || !c.hostReplied {
                // Before any transaction, or a 421 to the first one (a receiver
                // that greets and then declines everything): the host failed.
                var what = "EHLO reply"
                if case .greetingRefused? = reason { what = "greeting" }
                failure = Self.failureReply("unexpected \(what): \(r)", remote: r)
            }
        case .timedOut(let phase):
            failure = Self.failureReply("timeout waiting for \(phase.awaited)")
        case .protocolError(let why):
            failure = Self.failureReply("protocol error: \(why)")
        case .connectionLost:
            // Closed while idle (no reply awaited) is the receiver ending a
            // connection it had no work on, not a failed session.
            if c.session.failedInPhase != nil {
                failure = Self.failureReply(c.session.failureReason ?? "connection lost")
            }
        case .quit, nil:
            break
        }
        // An opportunistic TLS handshake failure is handled by its plain-text fallback.
        if c.tlsFailed { failure = nil }
        // Closed by this node (over its cluster share), not by the host.
        if c.shedBeforeTransaction { failure = nil }
        guard let failure, let host = c.host else { kick(q); return }
        let text = failure.lines.joined(separator: " ")
        q.lastReply = failure.description
        let isNew = hostFailed(host, vmta: c.vmta.name, queue: q, reason: text)
        if hasUsableHost(c.hosts, vmta: c.vmta.name) {
            if isNew { movedOn(from: host, queue: q, reason: text) }
            kick(q)  // the next connection goes to another MX host
        } else {
            deferDestination(q, hosts: c.hosts, vmta: c.vmta.name, reply: failure, info: c.attemptInfo)
        }
    }

    /// `smtp-553-means-invalid-mailbox`: a 553 to RCPT without an enhanced
    /// code is read as 5.1.1 (RFC 5321's "mailbox name not allowed"), so
    /// that it is recorded and classified as a bad mailbox.
    static func interpreting553(_ reply: SMTPReply, toRecipient rcptReply: SMTPReply?, policy: DomainSettings) -> SMTPReply {
        guard policy.smtp553MeansInvalidMailbox, reply.code == 553, reply.enhancedCode == nil, rcptReply == reply else { return reply }
        var r = reply
        r.enhancedCode = EnhancedStatusCode(5, 1, 1)
        return r
    }

    /// Whether another open connection of this loop goes to `host` from `c`'s VMTA.
    private func hasOtherConnection(to host: RouteHost, than c: DeliveryConnection<Loop>) -> Bool {
        connections.values.contains { $0 !== c && !$0.closed && $0.vmta.name == c.vmta.name && $0.host?.address == host.address }
    }

    func release(_ c: DeliveryConnection<Loop>) {
        connections[ObjectIdentifier(c)] = nil
        let key = ObjectIdentifier(c.queue)
        if var list = connectionsByQueue.removeValue(forKey: key) {
            list.removeAll { $0 === c }
            if !list.isEmpty { connectionsByQueue[key] = list }
        }
        if stopping { checkStopped() }
    }

    private func deferQueue(_ q: DeliveryQueue, reason: String) {
        let delay = q.policy.retryAfter(inBackoff: q.isBackoff).delay(afterFailures: 1).nanoseconds
        q.lastReply = reason
        q.suspend(until: loop.now &+ delay, reason: reason)
        observer.queueDeferred(q, reason: reason)
        kick(q)
    }

    private func noMailHost(_ q: DeliveryQueue, reason: String) {
        guard q.policy.bounceUponNoMX else { deferQueue(q, reason: reason); return }
        bounceWaiting(q, reply: SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 1, 2), reason), category: "bad-domain")
    }

    /// Bounces every item waiting in `q` with `reply` (bounce-upon-no-mx, bounce-upon-5xx-greeting).
    private func bounceWaiting(_ q: DeliveryQueue, reply: SMTPReply, category: String) {
        for item in q.removeAll() {
            for r in item.recipients where item.message.finish(recipient: r, as: .bounced) {
                observer.bounced(item.message, recipient: r, queue: q, reply: reply, category: category, connection: nil)
            }
            if item.message.isComplete { observer.messageCompleted(item.message) }
        }
    }

    private func expire(_ item: DeliveryItem, queue q: DeliveryQueue) {
        let reply = SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 4, 7),
                              "delivery time expired (bounce-after); last reply: \(q.lastReply)")
        for r in item.recipients where item.message.finish(recipient: r, as: .expired) {
            observer.bounced(item.message, recipient: r, queue: q, reply: reply, category: "message-expired", connection: nil)
        }
        q.noteBounced(item.recipients.count)
        if item.message.isComplete { observer.messageCompleted(item.message) }
    }

    // MARK: Management

    /// Queues matching a pattern like `gmail.com/*`.
    public func queues(matching pattern: String) -> [DeliveryQueue] {
        queues.values.filter { $0.key.matches(pattern: pattern) }.sorted { $0.key < $1.key }
    }

    public func pause(_ pattern: String) -> Int {
        if !standingPauses.contains(pattern) { standingPauses.append(pattern) }
        let qs = queues(matching: pattern)
        for q in qs {
            if !q.isPaused { observer.queueModeChanged(q, .paused) }
            q.isPaused = true
            kick(q)
        }
        return qs.count
    }

    public func resume(_ pattern: String) -> Int {
        // A standing pause ends when resumed by its own pattern or by one covering it ('*' covers 'hotmail.com/*').
        standingPauses.removeAll { standing in
            let parts = standing.split(separator: "/", maxSplits: 1).map(String.init)
            return standing == pattern || QueueKey(domain: parts.first ?? "*", vmta: parts.count > 1 ? parts[1] : "*").matches(pattern: pattern)
        }
        let qs = queues(matching: pattern)
        for q in qs {
            if q.isPaused || q.suspendedUntil > loop.now { observer.queueModeChanged(q, .resumed) }
            q.resume()
            kick(q)
        }
        return qs.count
    }

    /// `schedule` (retry now). The MX hosts a matched queue's VMTA backed off
    /// are forgiven too: otherwise the queue would find every host still backed
    /// off, defer what it just took and suspend again until the old time.
    public func schedule(_ pattern: String) -> Int {
        let qs = queues(matching: pattern)
        if !qs.isEmpty && !mxBackoff.isEmpty {
            let vmtas = Set(qs.map(\.key.vmta))
            mxBackoff = mxBackoff.filter { !vmtas.contains($0.key.vmta) }
        }
        for q in qs { q.retryNow(); kick(q) }
        return qs.count
    }

    public func setMode(_ pattern: String, backoff: Bool) -> Int {
        let qs = queues(matching: pattern)
        for q in qs {
            if backoff != q.isBackoff {
                observer.queueModeChanged(q, backoff ? .enteredBackoff(reason: "set by the operator")
                                                      : .leftBackoff(reason: "set by the operator"))
            }
            if backoff { q.enterBackoff(now: loop.now) } else { q.leaveBackoff(now: loop.now) }
            kick(q)
        }
        return qs.count
    }

    /// Deletes every recipient of matching queues, bouncing nothing (an operator's choice,
    /// recorded as bounces with category "other" so the accounting stays complete).
    public func delete(_ pattern: String) -> Int {
        var n = 0
        let reply = SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 0, 0), "deleted by the operator")
        for q in queues(matching: pattern) {
            for item in q.removeAll() {
                for r in item.recipients where item.message.finish(recipient: r, as: .bounced) {
                    n += 1
                    observer.bounced(item.message, recipient: r, queue: q, reply: reply, category: "other", connection: nil)
                }
                if item.message.isComplete { observer.messageCompleted(item.message) }
            }
        }
        return n
    }

    // MARK: Shutdown

    /// Stops opening connections, lets in-flight transactions finish, quits idle
    /// connections; `done` runs when no connection is left.
    public func shutdown(_ done: @escaping () -> Void) {
        stopping = true
        stopped = done
        for (_, t) in queueTimers { loop.cancelTimer(t.handle) }
        queueTimers.removeAll()
        for c in connections.values where c.isIdle { c.quit() }
        checkStopped()
    }

    /// The shutdown deadline: every connection is abandoned now (the message
    /// in flight is deferred in memory and stays spooled), and `shutdown`'s
    /// `done` runs without waiting for connects still outstanding.
    public func forceStop(_ why: String) {
        stopping = true
        for (_, t) in queueTimers { loop.cancelTimer(t.handle) }
        queueTimers.removeAll()
        for c in Array(connections.values) { c.abandon(why) }
        if let done = stopped {
            stopped = nil
            done()
        }
    }

    private func checkStopped() {
        if connections.isEmpty, let done = stopped {
            stopped = nil
            done()
        } else if stopping {
            for c in connections.values where c.isIdle { c.quit() }
        }
    }
}
