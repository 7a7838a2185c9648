import PeregrineIO
import PeregrineSMTP
import PeregrineSpool
import PeregrineAccounting
import PeregrineEngine

/// Where the delivery loops hand events to the webhook log (WebhookService).
extension LoopWorker {
    /// Runs `record` (which writes the recipient's final outcome to the spool)
    /// once the outcome's event is durable, back on this loop; at once without
    /// webhooks. This ordering is what makes the event as durable as the
    /// outcome: see `WebhookEventLog`.
    func afterWebhookEvent(_ type: WebhookEventType, _ message: QueuedMessage, _ recipient: Int, reply: SMTPReply,
                           category: String? = nil, _ record: @escaping () -> Void) {
        guard let hooks = daemon.webhooks else { record(); return }
        let work = LoopConfined(record)
        let loop = self.loop
        hooks.emit(WebhookEvent(type: type, message: message, recipient: recipient, reply: reply, category: category)) {
            loop.execute { work.value() }
        }
    }

    /// A deferral's event (not waited for: a deferral writes nothing to the spool either).
    func emitDeferredEvent(_ message: QueuedMessage, _ recipient: Int, reply: SMTPReply) {
        guard let hooks = daemon.webhooks, hooks.wants(.deferred) else { return }
        hooks.emit(WebhookEvent(type: .deferred, message: message, recipient: recipient, reply: reply,
                                attempt: wallMillis()))
    }

    /// One `injected` event per recipient of a message just spooled. Written
    /// before the message is dispatched, so it precedes the message's
    /// outcomes in the log; a crash before it is durable is covered by
    /// `reemitInjectedEvents` at start-up.
    func emitInjectedEvents(_ message: QueuedMessage) {
        guard let hooks = daemon.webhooks, hooks.wants(.injected) else { return }
        for r in message.recipients.indices {
            hooks.emit(WebhookEvent(type: .injected, message: message, recipient: r))
        }
    }

    /// `complaint` and `async-bounce` events for the `f`/`rb` records a report gave.
    func emitReportEvents(_ records: [AccountingRecord]) {
        guard let hooks = daemon.webhooks else { return }
        for record in records {
            let type: WebhookEventType
            switch record.type {
            case .feedbackLoop: type = .complaint
            case .remoteBounce: type = .asyncBounce
            default: continue
            }
            guard hooks.wants(type) else { continue }
            // Same report read twice (a client retrying), same id: the receiver deduplicates.
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in "\(record.type.rawValue)|\(record.orig)|\(record.rcpt)|\(record.dsnStatus)|\(record.dsnDiag)|\(record.jobId)".utf8 {
                hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
            }
            hooks.emit(WebhookEvent(type: type, timeMillis: wallMillis(), id: "\(type.name).\(String(hash, radix: 16))",
                                    messageID: nil, recipient: record.rcpt, sender: record.orig,
                                    jobID: record.jobId.isEmpty ? nil : record.jobId,
                                    status: record.dsnStatus.isEmpty ? nil : String(record.dsnStatus.prefix { $0 != " " }),
                                    diagnostic: record.dsnDiag.isEmpty ? nil : record.dsnDiag,
                                    category: record.bounceCat.isEmpty ? nil : record.bounceCat))
        }
    }
}

extension Daemon {
    /// Opens the webhook log and starts the senders (no `<webhook>`: nothing). False after logging why it cannot.
    func startWebhooks() -> Bool {
        guard !config.webhooks.isEmpty else { return true }
        do {
            webhooks = try WebhookService(config: config, accounting: accounting,
                                          daemonLog: { [log = options.log, file = logFile] line in log(line); file?.write(line) })
            log("webhooks: \(config.webhooks.count) endpoint(s), events in \(config.spoolPath)/webhook-events")
            return true
        } catch {
            log("webhooks: cannot open the event log in \(config.spoolPath)/webhook-events: \(error)")
            return false
        }
    }

    /// `ctl reload` with changed `<webhook>` blocks or webhook-max-age
    /// (WebhookService.reconfigure). A daemon started without any webhook has
    /// no event log, and the loops read `webhooks` without a lock: adding the
    /// first one takes a restart, and says so.
    func reloadWebhooks(_ newConfig: PeregrineConfig) {
        if let webhooks {
            webhooks.reconfigure(newConfig)
        } else {
            log("warning: <webhook> blocks added to a daemon started without any take effect at the next start, not on reload")
        }
    }

    /// At start-up, `injected` again for a spooled message none of whose
    /// recipients is final: its first `injected` may have been lost in the
    /// crash (the spool append is durable before the event). Same ids: a
    /// receiver deduplicates. A message with a final recipient had its
    /// `injected` written before that outcome (log order), so needs none.
    func reemitInjectedEvents(_ message: QueuedMessage, states: RecipientStates) {
        guard let hooks = webhooks, hooks.wants(.injected), states.pendingCount == states.count else { return }
        for r in message.recipients.indices {
            hooks.emit(WebhookEvent(type: .injected, message: message, recipient: r))
        }
    }
}
