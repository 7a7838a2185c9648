import PeregrineSMTP

extension DeliveryEngine {
    /// Deletes every pending recipient of the messages injected with `jobId` (x-job),
    /// in every queue (`ctl delete --job-id`); each is recorded as a bounce with
    /// category "other", like a queue delete. Returns the number of recipients.
    public func delete(jobId: String) -> Int {
        var n = 0
        let reply = SMTPReply(code: 554, enhancedCode: EnhancedStatusCode(5, 0, 0), "deleted by the operator (job \(jobId))")
        for q in queues.values.sorted(by: { $0.key < $1.key }) {
            for item in q.remove(where: { $0.jobId == jobId }) {
                for r in item.recipients where item.message.finish(recipient: r, as: .bounced) {
                    n += 1
                    observer.bounced(item.message, recipient: r, queue: q, reply: reply, category: "other", connection: nil)
                }
                if item.message.isComplete { observer.messageCompleted(item.message) }
            }
        }
        return n
    }
}
