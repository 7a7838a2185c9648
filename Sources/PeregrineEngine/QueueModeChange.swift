/// A change of a queue's mode that an operator greps the log for: entering or
/// leaving backoff, a suspension, a pause or resume. Reported through
/// `DeliveryObserver.queueModeChanged` on the engine's loop, once per change
/// (a reply that finds the queue in backoff already reports nothing).
public enum QueueModeChange: Sendable, Equatable {
    /// Into backoff mode; `reason` is the reply a pattern list matched, or who asked.
    case enteredBackoff(reason: String)
    /// Back to normal mode; `reason` says what ended the backoff.
    case leftBackoff(reason: String)
    /// Nothing is sent for `seconds` (pattern list `suspend=…`).
    case suspended(seconds: UInt64, reason: String)
    /// `pause queue` by the operator.
    case paused
    /// `resume queue` by the operator (ends a pause and a suspension).
    case resumed

    /// The log text after the queue's name.
    public var logText: String {
        switch self {
        case .enteredBackoff(let reason): return "entering backoff mode (\(reason))"
        case .leftBackoff(let reason): return "leaving backoff mode, back to normal (\(reason))"
        case .suspended(let seconds, let reason): return "suspended for \(seconds)s (\(reason))"
        case .paused: return "paused by the operator"
        case .resumed: return "resumed by the operator"
        }
    }
}
